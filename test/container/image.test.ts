import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pgAvailable, pgQuery, ROOT, tempDir } from "../helpers/env.js";
import { myAvailable } from "../helpers/mysql.js";
import { IMAGE, IMAGE_UID, podman, RUN_ID, run, sh, UNAVAILABLE } from "./podman.js";

interface ImageConfig {
  User: string;
  Entrypoint: string[];
  Cmd: string[];
  Env: string[];
  Volumes: Record<string, unknown>;
  ExposedPorts: Record<string, unknown>;
  Labels: Record<string, string>;
  WorkingDir: string;
}

const PGDB = `dbkeepci${RUN_ID}`;
const pgUp = !UNAVAILABLE && (await pgAvailable());
const myUp = !UNAVAILABLE && (await myAvailable());

describe.skipIf(!!UNAVAILABLE)("the image built from deploy/Dockerfile", () => {
  it("is a non-root image with dbkeep as its entrypoint, the daemon as its command, three volumes, a healthcheck and labels", () => {
    const inspect = podman(["image", "inspect", IMAGE, "--format", "{{json .Config}}"]);
    expect(inspect.code, inspect.stderr).toBe(0);
    const c = JSON.parse(inspect.stdout) as ImageConfig;
    expect(c.User).toBe("dbkeep");
    expect(c.Entrypoint).toEqual(["dbkeep"]);
    expect(c.Cmd).toEqual(["daemon"]);
    expect(Object.keys(c.Volumes).sort()).toEqual(["/backups", "/config", "/var/lib/dbkeep"]);
    expect(c.Env).toContain("DBKEEP_STATE_DIR=/var/lib/dbkeep");
    expect(c.Env).toContain("DBKEEP_LISTEN=0.0.0.0:9187");
    expect(Object.keys(c.ExposedPorts)).toEqual(["9187/tcp"]);
    // Kept only in Docker's image format (podman build --format docker), as Docker builds it.
    const hc = JSON.parse(podman(["image", "inspect", IMAGE, "--format", "{{json .HealthCheck}}"]).stdout) as { Test: string[]; Interval: number } | null;
    expect(hc?.Test.join(" ")).toContain("/healthz");
    expect(hc?.Interval).toBe(30e9);
    const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
    expect(c.Labels["org.opencontainers.image.title"]).toBe("dbkeep");
    expect(c.Labels["org.opencontainers.image.version"]).toBe(version);
    expect(c.Labels["org.opencontainers.image.licenses"]).toBe("MIT");
    expect(c.Labels["org.opencontainers.image.revision"]).toMatch(/^[0-9a-f]{7,}$|^unknown$/);
  });

  it("runs as uid 10001, ships dist/ and production dependencies only, and `IMAGE --version` is the package's version", () => {
    const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
    expect(run(["--version"]).stdout.trim()).toBe(version);
    const r = sh("id -u; id -g; ls /opt/dbkeep; ls /opt/dbkeep/node_modules; ls -d /opt/dbkeep/node_modules/better-sqlite3/build/Release/*.node; stat -c %U /backups /var/lib/dbkeep");
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines.slice(0, 2)).toEqual([String(IMAGE_UID), String(IMAGE_UID)]);
    const top = r.stdout.split("\n").slice(2);
    expect(top).toContain("dist");
    expect(top).toContain("package.json");
    expect(top).not.toContain("src");
    // Production dependencies are there, development ones (the test runner, the compiler, the bundler) are not.
    for (const dep of ["better-sqlite3", "pg", "mysql2", "@aws-sdk", "commander"]) expect(top, dep).toContain(dep);
    for (const dev of ["vitest", "typescript", "esbuild", "eslint", "azurite", "s3rver"]) expect(top, dev).not.toContain(dev);
    expect(r.stdout).toMatch(/better_sqlite3\.node/);
    expect(r.stdout).toMatch(/dbkeep\ndbkeep\s*$/);
  });

  it("the native SQLite add-on works in the image: a backup of a SQLite file restores the same rows", () => {
    const script = [
      "set -e",
      "cd /tmp",
      "sqlite3 app.db \"CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 500) INSERT INTO t SELECT i, hex(randomblob(8)) FROM c;\"",
      "dbkeep backup sqlite:/tmp/app.db --to /tmp/b --verify >/dev/null 2>&1",
      "dbkeep restore /tmp/b latest --to sqlite:/tmp/copy.db --auto-confirm >/dev/null 2>&1",
      "sqlite3 app.db 'SELECT count(*), group_concat(v) FROM t' | md5sum",
      "sqlite3 copy.db 'SELECT count(*), group_concat(v) FROM t' | md5sum",
    ].join("\n");
    const r = sh(script);
    expect(r.code, r.stderr).toBe(0);
    const [a, b] = r.stdout.trim().split("\n");
    expect(a).toMatch(/^[0-9a-f]{32}/);
    expect(b).toBe(a);
  });

  it("size: printed, and small enough that dev dependencies and build tools cannot be in it", () => {
    const size = Number(podman(["image", "inspect", IMAGE, "--format", "{{.Size}}"]).stdout.trim());
    const base = podman(["image", "inspect", IMAGE, "--format", "{{json .RootFS.Layers}}"]);
    const layers = (JSON.parse(base.stdout) as string[]).length;
    process.stdout.write(`[image] ${IMAGE}: ${(size / 1e6).toFixed(0)} MB in ${layers} layers\n`);
    const history = podman(["history", IMAGE, "--format", "{{.Size}}\t{{.CreatedBy}}"]).stdout.split("\n").filter((l) => !l.startsWith("0 B")).map((l) => l.slice(0, 110));
    process.stdout.write(`${history.map((l) => `  ${l}`).join("\n")}\n`);
    expect(size).toBeGreaterThan(100e6);
    // The build stage with g++, python3 and every dev dependency is well over this.
    expect(size).toBeLessThan(900e6);
  });
});

describe.skipIf(!pgUp || !myUp)("dbkeep doctor inside the image: the version of every bundled tool", () => {
  let cfg: string;

  beforeAll(async () => {
    await pgQuery("postgres", `CREATE DATABASE "${PGDB}"`);
    const dir = tempDir("dbkeep-ctr-doctor-");
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  pg: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${PGDB} }
  pgall: { engine: postgres, host: 127.0.0.1, user: postgres, all_databases: true }
  maria: { engine: mariadb, host: 127.0.0.1, user: root, database: mysql }
  maria-mydumper: { engine: mariadb, host: 127.0.0.1, user: root, database: mysql, tool: mydumper }
  cache: { engine: redis, host: 127.0.0.1, port: 6379 }
  local: { engine: sqlite, path: /tmp/none.db }
stores:
  local: { type: local, path: /backups }
jobs: {}
`,
      { mode: 0o644 },
    );
  });

  afterAll(async () => {
    if (pgUp) await pgQuery("postgres", `DROP DATABASE IF EXISTS "${PGDB}" WITH (FORCE)`);
  });

  it("doctor names each engine's client tools with their versions; the stores' and compressors' tools answer --version", () => {
    const r = run(["doctor"], { volumes: [`${cfg}:/config/dbkeep.yaml:ro`] });
    process.stdout.write(`[doctor in ${IMAGE}]\n${r.stdout}`);
    // The SQLite file does not exist: that one error is expected, every tool line must be a ✓.
    const tool = (name: string) => new RegExp(`✓ ${name} \\S*\\d+\\.\\d+`);
    for (const t of ["pg_dump", "pg_restore", "psql", "pg_dumpall", "mydumper", "myloader", "redis-cli"]) expect(r.stdout, t).toMatch(tool(t));
    expect(r.stdout).toMatch(/✓ (mariadb-dump|mysqldump) .*\d+\.\d+/);
    expect(r.stdout).toMatch(/✓ (mariadb|mysql) .*\d+\.\d+/);
    expect(r.stdout).toMatch(/✓ SQLite library 3\.\d+/);
    expect(r.stdout).toMatch(/✓ server PostgreSQL \d+/);
    expect(r.stdout).toMatch(/✓ server .*MariaDB/);
    expect(r.stdout).toMatch(/✓ server Redis \d+/);
    expect(r.stdout.match(/✗/g)).toHaveLength(1);

    // What no datasource's doctor runs: compressors, encryption, the restic and rclone stores, ssh, mariadb-backup.
    const tools: [string, RegExp][] = [
      ["zstd --version", /v\d+\.\d+/],
      ["lz4 --version", /v\d+\.\d+/],
      ["gzip --version", /gzip \d+/],
      ["age --version", /v?\d+\.\d+/],
      ["restic version", /restic \d+\.\d+/],
      ["rclone version", /rclone v\d+\.\d+/],
      ["ssh -V", /OpenSSH_\d+/],
      ["mariadb-backup --version", /\d+\.\d+\.\d+-MariaDB/],
      ["sqlite3 --version", /^3\.\d+/],
      ["node --version", /^v20\./],
    ];
    const out = sh(tools.map(([cmd]) => `echo "== ${cmd}"; ${cmd} 2>&1 | head -1`).join("; "));
    expect(out.code, out.stderr).toBe(0);
    process.stdout.write(`[tool versions in ${IMAGE}]\n${out.stdout}`);
    const sections = out.stdout.split(/^== /m).slice(1);
    expect(sections).toHaveLength(tools.length);
    sections.forEach((s, i) => expect(s.split("\n")[1], tools[i]![0]).toMatch(tools[i]![1]));
  });
});
