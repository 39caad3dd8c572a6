import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { createDb, dropDb, PG, pgAvailable, pgQuery, ROOT } from "../helpers/env.js";
import { contentOf, schemaOf } from "../helpers/pgcompare.js";
import { engineConformance } from "./engine.suite.js";

const SRC = "dbkeep_conf_pg_src";
const DST = "dbkeep_conf_pg_dst";
const available = await pgAvailable();

if (available) {
  engineConformance({
    engine: "postgres",
    async setup() {
      await createDb(SRC);
      await dropDb(DST);
      execFileSync("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG.host, "-U", PG.user, "-d", SRC, "-f", join(ROOT, "test/fixtures/postgres-fixture.sql")]);
      // Enough rows that a slow compression level keeps the dump running while the test cuts it.
      await pgQuery(SRC, "CREATE TABLE public.filler AS SELECT g AS id, md5(g::text) || repeat(' filler', 10) AS v FROM generate_series(1, 300000) g");
      const base = { engine: "postgres", host: PG.host, port: PG.port, user: PG.user };
      return { source: { ...base, database: SRC }, target: { ...base, database: DST } };
    },
    async snapshot(which) {
      const db = which === "source" ? SRC : DST;
      return { schema: schemaOf(db), ...(await contentOf(db)) };
    },
    async teardown() {
      await dropDb(SRC);
      await dropDb(DST);
    },
    variants: [
      { label: "plain + zstd", options: { format: "plain", compression: "zstd" } },
      { label: "custom + lz4", options: { format: "custom", compression: "lz4" } },
      { label: "directory + gzip, 2 jobs", options: { format: "directory", compression: "gzip", jobs: 2 } },
    ],
    authFailure: { options: { engine: "postgres", host: PG.host, port: PG.port, user: "dbkeep_no_such_role", database: SRC }, message: /cannot connect to PostgreSQL .*role "dbkeep_no_such_role" does not exist/s },
    async interruptDump() {
      const r = await pgQuery<{ n: number }>("postgres", "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'dbkeep' AND query ILIKE 'COPY%'", [SRC]);
      return (r[0]?.n ?? 0) > 0;
    },
    // pg_dump writes straight into the compressor: lz4 -12 reads 4 MiB blocks at about 20 MB/s, so the COPY of
    // the filler table runs for about a second (zstd -19 -T0 would take all 30 MB into its buffers at once).
    interruptWith: { format: "plain", compression: "lz4", compression_level: 12 },
    missingTool: { options: { bin_dir: "/nonexistent/bin" }, message: /pg_dump not found in \/nonexistent\/bin\nhint: install postgresql-client or set bin_dir/ },
  });
}
