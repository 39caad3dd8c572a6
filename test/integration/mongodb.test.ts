import { spawn, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeep, tempDir } from "../helpers/env.js";

const onPath = (tool: string) => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;
/** mongosh compares the data; without the three tools there is nothing real to run against. */
const hasMongod = onPath("mongod") && onPath("mongodump") && onPath("mongorestore") && onPath("mongosh");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (typeof a === "object" && a ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

describe.skipIf(!hasMongod)("MongoDB engine against a real mongod (mongod not on this machine)", () => {
  const dir = tempDir("dbkeep-mongo-it-");
  let port = 0;
  let stop: (() => void) | undefined;
  const sh = (db: string, js: string) => spawnSync("mongosh", ["--quiet", `mongodb://127.0.0.1:${port}/${db}`, "--eval", js], { encoding: "utf8" });

  beforeAll(async () => {
    port = await freePort();
    mkdirSync(join(dir, "data"));
    const child = spawn("mongod", ["--dbpath", join(dir, "data"), "--port", String(port), "--bind_ip", "127.0.0.1"], { stdio: "ignore" });
    stop = () => child.kill("SIGTERM");
    for (let i = 0; i < 100; i++) {
      if (sh("admin", "db.runCommand({ ping: 1 }).ok").stdout.trim() === "1") return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error("mongod did not start");
  });
  afterAll(() => stop?.());

  it("backs up one database and restores it under another name, document for document", () => {
    sh("app", `db.items.insertMany([{ _id: 1, s: "ü", b: BinData(0, "AAEC/w==") }, { _id: 2, n: NumberLong(42), d: ISODate("2026-01-01") }]); db.items.createIndex({ s: 1 })`);
    const b = dbkeep(["backup", `mongodb://127.0.0.1:${port}/app`, "--to", join(dir, "backups")]);
    expect(b.stderr).not.toContain("error:");
    expect(b.code).toBe(0);
    const r = dbkeep(["restore", join(dir, "backups"), "latest", "--to", `mongodb://127.0.0.1:${port}/app_copy`, "--auto-confirm"]);
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    const dump = (db: string) => sh(db, "EJSON.stringify(db.items.find().sort({ _id: 1 }).toArray()) + EJSON.stringify(db.items.getIndexes().map((i) => i.key))").stdout;
    expect(dump("app_copy")).toBe(dump("app"));
  });
});
