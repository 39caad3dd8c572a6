import { describe, expect, it } from "vitest";
import { seedCatalog, seedEntry } from "../../src/core/backup-catalog.js";
import type { Manifest } from "../../src/core/manifest.js";
import { complete } from "../../src/query/console.js";
import { extractFile, parseDotEnv, parseSeedBackup, parseSeedExtract, seedDatasource } from "../../src/query/console-seed004.js";

const words = (line: string) => line.split(/\s+/).filter(Boolean);
const seed = (line: string) => {
  const [command = "", ...rest] = words(line);
  return parseSeedBackup(command.toLowerCase(), rest);
};

describe("seed 004's console commands", () => {
  it("reads full database, full tables and differential backup as that tool's users type them", () => {
    expect(seed("full database -path /backups")).toEqual({ kind: "backup", seed: "full database", tables: [], differential: false, path: "/backups" });
    expect(seed("full tables -tablename users -tablename orders -path /b")).toMatchObject({ tables: ["users", "orders"], path: "/b", differential: false });
    expect(seed("full tables -tablename users orders,items")).toMatchObject({ tables: ["users", "orders", "items"] });
    expect(seed("full tables -tablename users -path /b")?.tables).toEqual(["users"]);
    expect(seed("differential backup")).toEqual({ kind: "backup", seed: "differential backup", tables: [], differential: true });
    expect(seed("FULL DATABASE -PATH /x")).toMatchObject({ seed: "full database", path: "/x" });
    expect(seed("sql select 1")).toBeUndefined();
  });

  it("says what to use for the forms it has no equivalent for", () => {
    expect(() => seed("full")).toThrow(/full needs what to back up/);
    expect(() => seed("full schema -path /x")).toThrow(/unknown command "full schema"/);
    expect(() => seed("full tables -path /x")).toThrow(/at least one -tablename/);
    expect(() => seed("full database -tablename users")).toThrow(/full database takes no -tablename/);
    expect(() => seed("full database -path")).toThrow(/-path needs a value/);
    expect(() => seed("full database -compress")).toThrow(/unknown option -compress/);
    expect(() => seed("full database /x")).toThrow(/unexpected "\/x"/);
    expect(() => seed("differential")).toThrow(/differential needs backup/);
    expect(() => seed("incremental backup")).toThrow(/incremental backups do not exist/);
  });

  it("finds -extract -path at the end of a SQL line, in either order", () => {
    expect(parseSeedExtract("SELECT id, email FROM users WHERE is_active = true -extract -path /tmp/exports")).toEqual({ sql: "SELECT id, email FROM users WHERE is_active = true", extract: "/tmp/exports" });
    expect(parseSeedExtract("SELECT 1 -path '/tmp/my exports' -extract")).toEqual({ sql: "SELECT 1", extract: "/tmp/my exports" });
    expect(parseSeedExtract("SELECT 5 - 3")).toBeUndefined();
    expect(() => parseSeedExtract("SELECT 1 -extract")).toThrow(/-extract needs -path DIR/);
    expect(extractFile("/tmp/exports", "my db", new Date("2025-11-01T12:00:00Z"))).toBe("/tmp/exports/my_db_query_20251101_120000.csv");
    expect(extractFile("/tmp/out.csv", "mydb", new Date())).toBe("/tmp/out.csv");
  });

  it("Tab completes the seed's words", () => {
    expect(complete("fu", [], [])[0]).toEqual(["full "]);
    expect(complete("full t", [], [])[0]).toEqual(["tables"]);
    expect(complete("full tables -t", [], [])[0]).toEqual(["-tablename"]);
    expect(complete("full tables -tablename or", [{ name: "orders", columns: ["id"] }], [])[0]).toEqual(["orders"]);
    expect(complete("differential b", [], [])[0]).toEqual(["backup"]);
  });

  it("starts from the seed's flags and .env, keeping the password out of the URL", () => {
    const env = parseDotEnv("# PostgreSQL example\nDB_HOST=db.internal\nDB_PORT=5433\nexport DB_USER='app'\nDB_PASSWORD=\"s3cr#t\"\nDB_NAME=mydb # the database\n");
    expect(env).toEqual({ DB_HOST: "db.internal", DB_PORT: "5433", DB_USER: "app", DB_PASSWORD: "s3cr#t", DB_NAME: "mydb" });
    expect(seedDatasource({ db: "postgres" }, env)).toEqual({ url: "postgres://app@db.internal:5433/mydb", password: { value: "s3cr#t", variable: "PGPASSWORD" } });
    expect(seedDatasource({ db: "mysql", database: "shop", host: "h", user: "root", password: "pw" }, {})).toEqual({ url: "mysql://root@h/shop", password: { value: "pw", variable: "MYSQL_PWD" } });
    expect(() => seedDatasource({ db: "oracle", database: "x" }, {})).toThrow(/postgres and mysql/);
    expect(() => seedDatasource({ db: "postgres", database: "x", storage: "s3" }, {})).toThrow(/only local storage/);
    expect(() => seedDatasource({ db: "postgres" }, {})).toThrow(/--database NAME/);
  });
});

describe("backup_catalog.json from manifests", () => {
  const manifest = (o: Partial<Manifest>): Manifest => ({
    manifest_version: 1,
    id: "mydb-20251101-120000",
    engine: "postgres",
    database: "mydb",
    format: "plain",
    compression: "zstd",
    encryption: null,
    key: "mydb/mydb-20251101-120000.sql.zst",
    checksum_key: "mydb/mydb-20251101-120000.sql.zst.sha256",
    raw_bytes: 9000,
    stored_bytes: 2097152,
    sha256: "a1b2".padEnd(64, "0"),
    started_at: "2025-11-01T12:00:00.734Z",
    finished_at: "2025-11-01T12:00:12.500Z",
    duration_seconds: 12.4987,
    tables: [{ name: "public.a", rows: 49000 }, { name: "public.b", rows_estimate: 1000 }],
    dbkeep_version: "0.1.0",
    ...o,
  });

  it("maps a manifest onto the seed's entry, field by field", () => {
    const e = seedEntry(manifest({ extras: [{ name: "globals", key: "g", sha256: "x", raw_bytes: 1, stored_bytes: 100 }] }), "/backups/mydb/mydb-20251101-120000.sql.zst");
    expect(JSON.stringify(e)).toBe(
      JSON.stringify({
        id: "full_mydb_20251101_120000_a1b2",
        type: "full",
        status: "completed",
        timestamp_start: "2025-11-01T12:00:00+00:00",
        duration_seconds: 12.5,
        compress: true,
        backup_location: "/backups/mydb/mydb-20251101-120000.sql.zst",
        statistics: { total_tables: 2, total_rows_processed: 50000, total_size_bytes: 2097252 },
      }),
    );
    expect(seedEntry(manifest({ compression: "none", selection: { patterns: { tables: ["a"] }, tables: ["public.a"] }, tables: undefined }), "x")).toMatchObject({
      type: "partial",
      compress: false,
      statistics: { total_tables: 1, total_rows_processed: 0 },
    });
    expect(seedEntry(manifest({ differential: { kind: "differential", schema_digest: "d" } }), "x").id).toMatch(/^differential_mydb_/);
  });

  it("lists oldest first, each backup once", () => {
    const old = manifest({ id: "mydb-20251101-110000", started_at: "2025-11-01T11:00:00Z", sha256: "0".repeat(64) });
    const cat = seedCatalog([{ manifest: manifest({}), location: "/b/new" }, { manifest: old, location: "/b/old" }, { manifest: old, location: "/b/old" }]);
    expect(cat.backups.map((b) => b.backup_location)).toEqual(["/b/old", "/b/new"]);
  });
});
