import { execFileSync } from "node:child_process";
import { PG, pgQuery } from "./env.js";

/** pg_dump --schema-only, without the lines that name the dump's own run. */
export function schemaOf(db: string): string {
  const out = execFileSync("pg_dump", ["-h", PG.host, "-p", String(PG.port), "-U", PG.user, "--schema-only", db], { encoding: "utf8" });
  return out
    .split("\n")
    // \restrict carries a random key per dump (pg_dump >= 15.14); the rest must match byte for byte.
    .filter((l) => !l.startsWith("-- Dumped") && !l.startsWith("\\restrict") && !l.startsWith("\\unrestrict"))
    .join("\n");
}

/** Per-table content hashes (every row, ordered), sequence values and large objects: what a user cares about. */
export async function contentOf(db: string): Promise<Record<string, string>> {
  const tables = await pgQuery<{ t: string }>(
    db,
    `SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1`,
  );
  const out: Record<string, string> = {};
  for (const { t } of tables) {
    const [r] = await pgQuery<{ n: string; h: string | null }>(db, `SELECT count(*) AS n, md5(string_agg(x::text, E'\\n' ORDER BY x::text)) AS h FROM ${t} x`);
    out[t] = `${r?.n}:${r?.h}`;
  }
  const seqs = await pgQuery<{ s: string; v: string }>(db, "SELECT format('%I.%I', schemaname, sequencename) AS s, last_value::text AS v FROM pg_sequences ORDER BY 1");
  for (const s of seqs) out[`sequence ${s.s}`] = s.v;
  const [lo] = await pgQuery<{ h: string | null; n: string }>(db, "SELECT count(*) AS n, md5(string_agg(md5(lo_get(oid)), ',' ORDER BY oid)) AS h FROM pg_largeobject_metadata");
  out["large objects"] = `${lo?.n}:${lo?.h}`;
  return out;
}
