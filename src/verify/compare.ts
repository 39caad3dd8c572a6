import type { Manifest } from "../core/manifest.js";
import type { SchemaObjects } from "../engines/engine.js";
import type { Catalog } from "./engine.js";
import type { CheckResult } from "./report.js";

export const OBJECT_KINDS = ["indexes", "foreign_keys", "views", "functions", "triggers", "sequences", "types", "events"] as const;

const LABEL: Record<(typeof OBJECT_KINDS)[number], string> = {
  indexes: "index(es)",
  foreign_keys: "foreign key(s)",
  views: "view(s)",
  functions: "function(s)/procedure(s)",
  triggers: "trigger(s)",
  sequences: "sequence(s)",
  types: "type(s)",
  events: "event(s)",
};

function list(names: string[], max = 5): string {
  return names.slice(0, max).join(", ") + (names.length > max ? `, ... (${names.length} in all)` : "");
}

/** The restored copy holds exactly the tables the manifest lists. */
export function checkTables(m: Manifest, c: Catalog): CheckResult {
  if (!m.tables) return { name: "tables", status: "SKIP", detail: "the manifest lists no tables" };
  const expected = new Set(m.tables.map((t) => t.name));
  const actual = new Set(c.tables.map((t) => t.name));
  const missing = [...expected].filter((t) => !actual.has(t)).sort();
  const unexpected = [...actual].filter((t) => !expected.has(t)).sort();
  if (missing.length === 0 && unexpected.length === 0) {
    return { name: "tables", status: "PASS", detail: `${expected.size} table(s) present, none unexpected` };
  }
  const parts = [missing.length ? `missing ${missing.length} of ${expected.size}: ${list(missing)}` : "", unexpected.length ? `unexpected: ${list(unexpected)}` : ""].filter(Boolean);
  return { name: "tables", status: "FAIL", detail: parts.join("; "), data: { missing, unexpected } };
}

/** Exact counts recorded at backup time must match; estimates are not compared. */
export function checkRowCounts(m: Manifest, c: Catalog): CheckResult {
  const exact = (m.tables ?? []).filter((t) => t.rows !== undefined);
  if (exact.length === 0) {
    return { name: "row_counts", status: "SKIP", detail: m.tables?.length ? "the manifest holds estimates only (no exact counts were taken at backup time)" : "the manifest lists no tables" };
  }
  const actual = new Map(c.tables.map((t) => [t.name, t.rows]));
  const differ: { table: string; expected: number; actual: number | null }[] = [];
  for (const t of exact) {
    const a = actual.get(t.name);
    if (a !== t.rows) differ.push({ table: t.name, expected: t.rows!, actual: a ?? null });
  }
  const estimates = (m.tables?.length ?? 0) - exact.length;
  const note = estimates ? ` (${estimates} with estimates only, not compared)` : "";
  if (differ.length === 0) {
    const total = exact.reduce((s, t) => s + (t.rows ?? 0), 0);
    return { name: "row_counts", status: "PASS", detail: `${exact.length} table(s), ${total} row(s), as recorded at backup time${note}` };
  }
  const shown = differ.slice(0, 5).map((d) => `${d.table}: ${d.actual === null ? "table missing" : `${d.actual} rows`}, expected ${d.expected}`);
  return {
    name: "row_counts",
    status: "FAIL",
    detail: `${differ.length} table(s) differ: ${shown.join("; ")}${differ.length > 5 ? "; ..." : ""}${note}`,
    data: { differ },
  };
}

/** Each kind of schema object recorded at backup time is back, and nothing else of that kind appeared. */
export function checkObjects(m: Manifest, c: Catalog): CheckResult[] {
  const recorded: SchemaObjects = m.objects ?? {};
  const out: CheckResult[] = [];
  for (const kind of OBJECT_KINDS) {
    const have = c.objects[kind];
    if (have === undefined) continue; // the engine has no such objects
    const want = recorded[kind];
    if (want === undefined) {
      out.push({ name: kind, status: "SKIP", detail: m.objects ? "not recorded at backup time" : "the manifest records no schema objects (made by an older dbkeep)" });
      continue;
    }
    const actual = new Set(have);
    const expected = new Set(want);
    const missing = want.filter((x) => !actual.has(x));
    const unexpected = have.filter((x) => !expected.has(x));
    if (!missing.length && !unexpected.length) {
      out.push({ name: kind, status: "PASS", detail: `${want.length} ${LABEL[kind]} present` });
      continue;
    }
    const parts = [missing.length ? `missing ${missing.length} of ${want.length}: ${list(missing)}` : "", unexpected.length ? `unexpected: ${list(unexpected)}` : ""].filter(Boolean);
    out.push({ name: kind, status: "FAIL", detail: parts.join("; "), data: { missing, unexpected } });
  }
  return out;
}
