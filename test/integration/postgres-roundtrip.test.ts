import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDb, dbkeep, dropDb, pgAvailable, pgUrl, PG, ROOT, tempDir } from "../helpers/env.js";
import { contentOf, schemaOf } from "../helpers/pgcompare.js";

const SRC = "dbkeep_it_roundtrip_src";
const available = await pgAvailable();
const created: string[] = [];

describe.skipIf(!available)("PostgreSQL roundtrip through the CLI", () => {
  let store: string;
  let schema: string;
  let content: Record<string, string>;

  beforeAll(async () => {
    store = tempDir();
    await createDb(SRC);
    created.push(SRC);
    execFileSync("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG.host, "-U", PG.user, "-d", SRC, "-f", join(ROOT, "test/fixtures/postgres-fixture.sql")]);
    schema = schemaOf(SRC);
    content = await contentOf(SRC);
    // The fixture must really hold what the test claims to carry.
    expect(content["shop.customers"]).toMatch(/^300:/);
    expect(content["large objects"]).toMatch(/^2:/);
    expect(schema).toContain("ATTACH PARTITION shop.orders_2025");
    expect(schema).toContain("CREATE MATERIALIZED VIEW shop.status_counts");
  });

  afterAll(async () => {
    for (const db of created) await dropDb(db);
  });

  const formats = ["plain", "custom", "directory"] as const;
  const compressions = ["gzip", "zstd", "lz4", "none"] as const;
  for (const format of formats) {
    for (const compression of compressions) {
      it(`${format} dump with ${compression}: schema and every table's content come back identical`, async () => {
        const dst = `dbkeep_it_rt_${format}_${compression}`;
        created.push(dst);
        await dropDb(dst);
        const b = dbkeep(["backup", pgUrl(SRC, `format=${format}`), "--to", store, "--compression", compression, "--json"]);
        expect(b.stderr + b.stdout).not.toContain("error:");
        expect(b.code).toBe(0);
        const result = JSON.parse(b.stdout) as { jobs: { key: string; sha256: string }[] };
        const key = result.jobs[0]!.key;
        const ext = { plain: ".sql", custom: ".dump", directory: ".tar" }[format] + { gzip: ".gz", zstd: ".zst", lz4: ".lz4", none: "" }[compression];
        expect(key.endsWith(ext)).toBe(true);
        // The sidecar is what `sha256sum -c` accepts.
        const dir = join(store, SRC);
        const sidecar = readdirSync(dir).find((f) => f === key.split("/").pop() + ".sha256")!;
        expect(execFileSync("sha256sum", ["-c", sidecar], { cwd: dir, encoding: "utf8" })).toContain(": OK");

        const id = key.split("/").pop()!.replace(ext, "");
        const r = dbkeep(["restore", store, id, "--to", pgUrl(dst), ...(format === "plain" ? [] : ["--jobs", "2"])]);
        expect(r.stderr).not.toContain("error:");
        expect(r.code).toBe(0);
        expect(schemaOf(dst)).toEqual(schema);
        expect(await contentOf(dst)).toEqual(content);
      });
    }
  }

  it("the manifest records engine, versions, sizes, checksum, times and tables, and no secret", () => {
    const l = dbkeep(["list", store, "--json"]);
    expect(l.code).toBe(0);
    const { backups } = JSON.parse(l.stdout) as { backups: Record<string, unknown>[] };
    const m = backups.find((b) => b.database === SRC)!;
    expect(m).toMatchObject({ manifest_version: 1, engine: "postgres", database: SRC, encryption: null });
    expect(m.tool).toMatchObject({ name: "pg_dump" });
    expect(String(m.server_version)).toMatch(/^\d+/);
    expect(m.raw_bytes).toBeGreaterThan(10_000);
    expect(m.stored_bytes).toBeGreaterThan(0);
    expect(m.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(Date.parse(String(m.finished_at))).toBeGreaterThanOrEqual(Date.parse(String(m.started_at)));
    const tables = (m.tables as { name: string }[]).map((t) => t.name);
    expect(tables).toEqual(expect.arrayContaining(["shop.customers", "shop.orders", "public.documents"]));
    const manifestFile = readdirSync(join(store, SRC)).find((f) => f.startsWith(String(m.id)) && f.endsWith(".manifest.json"))!;
    expect(readFileSync(join(store, SRC, manifestFile), "utf8")).not.toMatch(/password/i);
  });
});
