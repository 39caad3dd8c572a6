import { DbkeepError } from "./errors.js";

/**
 * Which tables a partial backup holds: glob patterns (`*` any characters, `?` one), as written in the config or
 * given with `--table`. `schemas` / `exclude_schemas` exist for PostgreSQL only.
 */
export interface SelectionPatterns {
  tables?: string[];
  exclude_tables?: string[];
  schemas?: string[];
  exclude_schemas?: string[];
}

export const SELECTION_KEYS = ["tables", "exclude_tables", "schemas", "exclude_schemas"] as const;

/** Schemas never dumped, whatever a pattern says. */
export const SYSTEM_SCHEMAS = ["pg_catalog", "information_schema", "mysql", "sys", "performance_schema"];

export function isSystemSchema(name: string): boolean {
  return SYSTEM_SCHEMAS.includes(name) || name.startsWith("pg_toast") || name.startsWith("pg_temp");
}

export function selectionOf(o: Record<string, unknown>): SelectionPatterns | undefined {
  const out: SelectionPatterns = {};
  for (const k of SELECTION_KEYS) {
    const v = o[k];
    if (Array.isArray(v) && v.length > 0) out[k] = v.map(String);
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** One part of a pattern: double quotes make it literal (and keep its case); `""` is a quote inside them. */
interface Part {
  regex: RegExp;
  text: string;
}

/**
 * Splits `schema.table` at the first dot outside double quotes. Unquoted parts are globs; with `fold` (PostgreSQL,
 * where unquoted names are lower case) they are folded to lower case first, as pg_dump and psql do.
 */
export function parsePattern(pattern: string, fold: boolean): { schema?: Part; table: Part } {
  const parts: { raw: string; quoted: boolean }[][] = [[]];
  let inQuotes = false;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '"') {
      if (inQuotes && pattern[i + 1] === '"') {
        parts[parts.length - 1]!.push({ raw: '"', quoted: true });
        i++;
      } else inQuotes = !inQuotes;
    } else if (ch === "." && !inQuotes && parts.length === 1) {
      parts.push([]);
    } else parts[parts.length - 1]!.push({ raw: ch, quoted: inQuotes });
  }
  if (inQuotes) throw new DbkeepError("USAGE", `table pattern ${pattern} has an unclosed double quote`, { hint: 'write "My.Table" with both quotes, "" for a quote inside' });
  const toPart = (chars: { raw: string; quoted: boolean }[]): Part => {
    let re = "";
    let text = "";
    for (const c of chars) {
      const ch = c.quoted || !fold ? c.raw : c.raw.toLowerCase();
      text += ch;
      if (!c.quoted && ch === "*") re += ".*";
      else if (!c.quoted && ch === "?") re += ".";
      else re += ch.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    }
    if (text === "") throw new DbkeepError("USAGE", `empty name in table pattern "${pattern}"`, { hint: "write table, schema.table or a glob such as app.*" });
    return { regex: new RegExp(`^${re}$`, "s"), text };
  };
  if (parts.length === 2) return { schema: toPart(parts[0]!), table: toPart(parts[1]!) };
  return { table: toPart(parts[0]!) };
}

export interface NamedTable {
  schema: string;
  table: string;
}

export interface ResolvedSelection {
  /** The tables the backup holds, in the engine's naming (`schema.table` for PostgreSQL, `table` for MySQL). */
  tables: NamedTable[];
  /** Schemas named by `schemas:` (PostgreSQL), resolved. */
  schemas: string[];
  excludedSchemas: string[];
  excludedTables: NamedTable[];
  warnings: string[];
}

/**
 * Resolves the patterns against the tables that exist. An include pattern that matches nothing is an error (a typo
 * must not silently make the backup smaller); an exclude pattern that matches nothing is a warning. System schemas
 * are never selected.
 */
export function resolveSelection(
  sel: SelectionPatterns,
  existing: NamedTable[],
  allSchemas: string[],
  o: { fold: boolean; what: string; withSchemas: boolean },
): ResolvedSelection {
  const warnings: string[] = [];
  const nonSystem = existing.filter((t) => !isSystemSchema(t.schema));
  const schemaNames = allSchemas.filter((s) => !isSystemSchema(s));
  const matchSchemas = (pattern: string): string[] => {
    const p = parsePattern(pattern, o.fold);
    if (p.schema) throw new DbkeepError("USAGE", `schema pattern "${pattern}" has a dot`, { hint: 'quote a schema name that contains a dot: "my.schema"' });
    if (SYSTEM_SCHEMAS.includes(p.table.text)) throw new DbkeepError("USAGE", `${p.table.text} is a system schema and is never backed up`);
    return schemaNames.filter((s) => p.table.regex.test(s));
  };
  const schemas = (sel.schemas ?? []).flatMap((pat) => {
    const m = matchSchemas(pat);
    if (m.length === 0) throw noMatch("schema", pat, o.what, schemaNames);
    return m;
  });
  const excludedSchemas = (sel.exclude_schemas ?? []).flatMap((pat) => {
    const m = matchSchemas(pat);
    if (m.length === 0) warnings.push(`exclude_schemas pattern "${pat}" matches no schema of ${o.what}`);
    return m;
  });
  if ((sel.schemas?.length || sel.exclude_schemas?.length) && !o.withSchemas) {
    throw new DbkeepError("USAGE", "schemas and exclude_schemas exist for PostgreSQL only", { hint: "select MySQL/MariaDB tables with tables / exclude_tables" });
  }
  const inScope = nonSystem.filter((t) => (schemas.length === 0 || schemas.includes(t.schema)) && !excludedSchemas.includes(t.schema));
  const matchTables = (pattern: string, among: NamedTable[]): NamedTable[] => {
    const p = parsePattern(pattern, o.fold);
    if (p.schema && !o.withSchemas) throw new DbkeepError("USAGE", `table pattern "${pattern}" names a schema`, { hint: 'MySQL/MariaDB patterns are table names of the datasource\'s database; quote a name with a dot: "a.b"' });
    if (p.schema && SYSTEM_SCHEMAS.includes(p.schema.text)) throw new DbkeepError("USAGE", `${p.schema.text} is a system schema and is never backed up`);
    return among.filter((t) => (!p.schema || p.schema.regex.test(t.schema)) && p.table.regex.test(t.table));
  };
  let tables: NamedTable[];
  if (sel.tables?.length) {
    const seen = new Set<string>();
    tables = [];
    for (const pat of sel.tables) {
      const m = matchTables(pat, inScope);
      if (m.length === 0) throw noMatch("table", pat, o.what, inScope.map((t) => (o.withSchemas ? `${t.schema}.${t.table}` : t.table)));
      for (const t of m) {
        const k = `${t.schema}\u0000${t.table}`;
        if (!seen.has(k)) tables.push(t);
        seen.add(k);
      }
    }
  } else tables = inScope;
  const excludedTables = (sel.exclude_tables ?? []).flatMap((pat) => {
    const m = matchTables(pat, nonSystem);
    if (m.length === 0) warnings.push(`exclude_tables pattern "${pat}" matches no table of ${o.what}`);
    return m;
  });
  const ex = new Set(excludedTables.map((t) => `${t.schema}\u0000${t.table}`));
  tables = tables.filter((t) => !ex.has(`${t.schema}\u0000${t.table}`));
  if (tables.length === 0) {
    throw new DbkeepError("USAGE", `the table selection leaves no table of ${o.what} to back up`, { hint: "check tables, exclude_tables, schemas and exclude_schemas (or --table)" });
  }
  tables.sort((a, b) => (a.schema === b.schema ? cmp(a.table, b.table) : cmp(a.schema, b.schema)));
  return { tables, schemas, excludedSchemas, excludedTables, warnings };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function noMatch(kind: string, pattern: string, what: string, names: string[]): DbkeepError {
  const shown = names.slice(0, 8).join(", ") + (names.length > 8 ? `, ... (${names.length})` : "");
  return new DbkeepError("USAGE", `${kind} pattern "${pattern}" matches no ${kind} of ${what}`, {
    hint: names.length ? `${kind}s there: ${shown}; unquoted names are globs (* and ?)` : `${what} has no ${kind}s that can be backed up`,
  });
}

/** A PostgreSQL pattern (pg_dump -t / -n) that matches exactly this name: double quotes make every character literal. */
export function pgExactPattern(...names: string[]): string {
  return names.map((n) => `"${n.replace(/"/g, '""')}"`).join(".");
}
