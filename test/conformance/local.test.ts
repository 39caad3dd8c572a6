import { mkdtempSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLocalStore } from "../../src/stores/local/index.js";
import { tempDir } from "../helpers/env.js";
import { storeConformance } from "./store.suite.js";

storeConformance("local", async () => createLocalStore({ path: mkdtempSync(join(tmpdir(), "dbkeep-local-")) }), { staged: true });

describe("local store specifics", () => {
  it("creates files 0600 and rejects keys that escape the directory", async () => {
    const dir = tempDir();
    const store = createLocalStore({ path: dir });
    await store.put("a/b.sql", Readable.from([Buffer.from("x")]));
    expect(statSync(join(dir, "a/b.sql")).mode & 0o777).toBe(0o600);
    await expect(store.put("../escape", Readable.from([Buffer.from("x")]))).rejects.toThrow(/invalid key/);
    expect(readdirSync(dir)).toEqual(["a"]);
  });
});
