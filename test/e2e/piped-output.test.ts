import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { beforeAll, describe, expect, it } from "vitest";
import { History } from "../../src/core/history.js";
import { serializeManifest, type Manifest } from "../../src/core/manifest.js";
import { DbkeepError } from "../../src/core/errors.js";
import { CLI, CLI_ENV, dbkeep, ROOT, tempDir, type CliResult } from "../helpers/env.js";

/**
 * A reader that does not read until the file $GO exists, then takes its input in small bites. Until then dbkeep's
 * output can only fill the pipe (64 KiB on Linux): a dbkeep that exits before the pipe drained loses the rest.
 */
const SLOW_READER = `
const { existsSync } = require("node:fs");
const wait = setInterval(() => {
  if (!existsSync(process.env.GO)) return;
  clearInterval(wait);
  process.stdin.on("data", (chunk) => {
    process.stdin.pause();
    process.stdout.write(chunk, () => setTimeout(() => process.stdin.resume(), 1));
  });
}, 20);
`;

/** Each output is more than a pipe holds (64 KiB on Linux). */
const BIG = 64 * 1024;

/**
 * `dbkeep ARGS | slow-reader` through a shell's pipe, as a user runs it: the reader starts reading once dbkeep has
 * exited, or after 2 s if it has not (a dbkeep that waits for its output to drain, as it should, is still waiting).
 */
async function pipedThroughSlowReader(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const work = mkdtempSync(join(tmpdir(), "dbkeep-pipe-"));
  try {
    const go = join(work, "go");
    const codeFile = join(work, "code");
    const script = `{ "$0" "$@"; echo $? > "$CODE_FILE"; } | "$0" -e "$SLOW_READER"`;
    const shell = spawn("bash", ["-c", script, process.execPath, CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...CLI_ENV, ...env, GO: go, CODE_FILE: codeFile, SLOW_READER },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    shell.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    shell.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<void>((r) => shell.once("close", () => r()));
    const deadline = Date.now() + 2000;
    while (!existsSync(codeFile) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    writeFileSync(go, "");
    await closed;
    return { code: Number(readFileSync(codeFile, "utf8").trim()), stdout, stderr };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const BACKUPS = 800;
let dir: string;
let cfg: string;

/**
 * One real backup of a small SQLite database, then copies of its three files under other ids and times: a store
 * with hundreds of backups in a second, each as dbkeep itself wrote it.
 */
function cloneBackups(backupDir: string, n: number): void {
  const manifest = readdirSync(backupDir).find((f) => f.endsWith(".manifest.json"))!;
  const id = manifest.slice(0, -".manifest.json".length);
  const files = readdirSync(backupDir).filter((f) => f.startsWith(`${id}.`));
  expect(files.length).toBeGreaterThanOrEqual(3);
  const texts = new Map(files.filter((f) => f.endsWith(".json") || f.endsWith(".sha256")).map((f) => [f, readFileSync(join(backupDir, f), "utf8")]));
  const start = Date.UTC(2024, 0, 1);
  for (let i = 0; i < n; i++) {
    const at = new Date(start + i * 3_600_000);
    const stamp = at.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
    const newId = id.replace(/\d{8}-\d{6}/, stamp);
    for (const f of files) {
      const target = join(backupDir, f.replace(id, newId));
      const text = texts.get(f);
      if (text === undefined) copyFileSync(join(backupDir, f), target);
      else {
        let out = text.split(id).join(newId);
        if (f.endsWith(".manifest.json")) {
          const m = JSON.parse(out) as Manifest;
          m.started_at = at.toISOString();
          m.finished_at = new Date(at.getTime() + 1000).toISOString();
          // As dbkeep writes it (with its own checksum over the fields, where manifests have one).
          out = serializeManifest(m);
        }
        writeFileSync(target, out);
      }
    }
  }
}

beforeAll(() => {
  dir = tempDir("dbkeep-piped-");
  copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
  cfg = join(dir, "dbkeep.yaml");
  writeFileSync(
    cfg,
    `datasources:\n  app: { engine: sqlite, path: ${join(dir, "app.db")} }\nstores:\n  local: { type: local, path: ${join(dir, "backups")} }\ndaemon: { history: ${join(dir, "history.db")} }\njobs:\n  app: { datasource: app, store: local, retention: { keep_last: 3 } }\n`,
    { mode: 0o600 },
  );
  const b = dbkeep(["-c", cfg, "backup", "app"]);
  expect(b.code, b.stderr).toBe(0);
  cloneBackups(join(dir, "backups", "app"), BACKUPS - 1);

  const h = new History(join(dir, "history.db"));
  try {
    for (let i = 0; i < BACKUPS; i++) {
      const ok = i % 3 !== 0;
      h.record(
        { job: "app", ok, attempts: ok ? 1 : 3, seconds: 1.5, store: "local:local", ...(ok ? {} : { error: new DbkeepError("ENGINE_FAILED", `the dump failed on attempt ${i}: ${"a long error text ".repeat(8)}`) }) },
        new Date(Date.UTC(2024, 0, 1) + i * 60_000),
        "schedule",
      );
    }
  } finally {
    h.close();
  }

  const db = new Database(join(dir, "rows.db"));
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  const insert = db.prepare("INSERT INTO t (v) VALUES (?)");
  db.transaction(() => {
    for (let i = 0; i < 6000; i++) insert.run(`row ${i} ${"x".repeat(40)}`);
  })();
  db.close();
});

describe("output piped into a slow reader is complete", () => {
  it("list --json", async () => {
    const r = await pipedThroughSlowReader(["-c", cfg, "list", "app", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(BIG);
    const doc = JSON.parse(r.stdout) as { backups: { id: string }[] };
    expect(doc.backups).toHaveLength(BACKUPS);
    expect(new Set(doc.backups.map((b) => b.id)).size).toBe(BACKUPS);
  });

  it("list (a table for people) of a store directory", async () => {
    const r = await pipedThroughSlowReader(["list", join(dir, "backups")]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(BIG);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^BACKUP\s+TAKEN/);
    expect(lines.filter((l) => /^app-\d{8}-\d{6}/.test(l))).toHaveLength(BACKUPS);
  });

  it("status --json", async () => {
    const r = await pipedThroughSlowReader(["-c", cfg, "status", "app", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(BIG);
    const doc = JSON.parse(r.stdout) as { job: string; backups: { id: string }[] };
    expect(doc.job).toBe("app");
    expect(doc.backups).toHaveLength(BACKUPS);
  });

  it("prune --dry-run --json", async () => {
    const r = await pipedThroughSlowReader(["-c", cfg, "prune", "app", "--dry-run", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(BIG);
    const doc = JSON.parse(r.stdout) as Record<string, unknown>;
    // Every backup is decided on, and nothing was deleted.
    expect(JSON.stringify(doc).match(/app-\d{8}-\d{6}/g)!.length).toBeGreaterThanOrEqual(BACKUPS);
    expect(readdirSync(join(dir, "backups", "app")).filter((f) => f.endsWith(".manifest.json"))).toHaveLength(BACKUPS);
  });

  it("history --json", async () => {
    const r = await pipedThroughSlowReader(["-c", cfg, "history", "app", "--json", "--limit", String(BACKUPS + 10)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(BIG);
    const doc = JSON.parse(r.stdout) as { runs: { ok: boolean; trigger: string }[] };
    // The recorded runs and the one real backup of beforeAll.
    expect(doc.runs).toHaveLength(BACKUPS + 1);
    expect(doc.runs.filter((x) => !x.ok)).toHaveLength(Math.ceil(BACKUPS / 3));
    expect(doc.runs.filter((x) => x.trigger === "cli")).toHaveLength(1);
  });

  it("query --json", async () => {
    const r = await pipedThroughSlowReader(["query", `sqlite:${join(dir, "rows.db")}`, "SELECT * FROM t ORDER BY id", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(BIG);
    const rows = JSON.parse(r.stdout) as { id: number; v: string }[];
    expect(rows).toHaveLength(6000);
    expect(rows[5999]).toEqual({ id: 6000, v: `row 5999 ${"x".repeat(40)}` });
  });

  it("a reader that stops early (| head) ends dbkeep without an error", async () => {
    const child = spawn(process.execPath, [CLI, "-c", cfg, "list", "app", "--json"], { cwd: ROOT, env: { ...process.env, ...CLI_ENV }, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const first = await new Promise<string>((resolve) => child.stdout.once("data", (d: Buffer) => resolve(d.toString())));
    child.stdout.destroy();
    const code = await new Promise<number>((r) => child.once("exit", (c) => r(c ?? -1)));
    expect(first.startsWith("{")).toBe(true);
    expect(code).toBe(0);
    expect(stderr).not.toMatch(/EPIPE|internal error/);
  });
});
