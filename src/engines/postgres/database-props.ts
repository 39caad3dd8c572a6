import type pg from "pg";

/**
 * What belongs to a database itself rather than to its contents, and what neither a plain nor a custom dump
 * without --create carries: its privileges (GRANT ... ON DATABASE), its per-database and per-role-in-database
 * settings (ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET), its connection limit and its comment.
 * A restore that swaps a new database in for an existing one copies these over first, so that the applications
 * see the same database afterwards. Owner, encoding and collation are set when the new database is created.
 *
 * With `inTransaction` (the swap's transaction) each statement runs under a savepoint, so that one the user may
 * not run is rolled back alone instead of aborting the transaction.
 */
export async function copyDatabaseProperties(
  c: pg.Client,
  from: string,
  to: string,
  o: { inTransaction?: boolean } = {},
): Promise<{ copied: string[]; failed: string[] }> {
  const db = await c.query<{ oid: number; acl: boolean; connlimit: number; comment: string | null }>(
    `SELECT oid::int, datacl IS NOT NULL AS acl, datconnlimit AS connlimit, shobj_description(oid, 'pg_database') AS comment
       FROM pg_database WHERE datname = $1`,
    [from],
  );
  const src = db.rows[0];
  if (!src) return { copied: [], failed: [] };
  const done: string[] = [];
  const failed: string[] = [];
  // One statement that the restoring user may not run (ALTER ROLE ... IN DATABASE needs CREATEROLE) is reported,
  // not fatal: the data is restored, and the caller says what could not be carried over.
  const run = async (sql: string, what: string) => {
    if (o.inTransaction) await c.query("SAVEPOINT dbkeep_property");
    try {
      await c.query(sql);
      if (o.inTransaction) await c.query("RELEASE SAVEPOINT dbkeep_property");
      done.push(what);
    } catch (err) {
      if (o.inTransaction) await c.query("ROLLBACK TO SAVEPOINT dbkeep_property");
      failed.push(`${sql.replace(ident(to), ident(from))}: ${(err as Error).message}`);
    }
  };
  if (src.acl) {
    // An explicit ACL replaces the defaults (PUBLIC may connect and create temporary tables): start from none.
    await run(`REVOKE ALL ON DATABASE ${ident(to)} FROM PUBLIC`, "privileges");
    const grants = await c.query<{ grantee: string | null; privilege: string; grantable: boolean }>(
      `SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END AS grantee, a.privilege_type AS privilege, a.is_grantable AS grantable
         FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1 ORDER BY 1, 2`,
      [from],
    );
    for (const g of grants.rows) {
      await run(`GRANT ${g.privilege} ON DATABASE ${ident(to)} TO ${g.grantee === null ? "PUBLIC" : ident(g.grantee)}${g.grantable ? " WITH GRANT OPTION" : ""}`, "privileges");
    }
  }
  const settings = await c.query<{ role: string | null; setting: string }>(
    `SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END AS role, unnest(s.setconfig) AS setting
       FROM pg_db_role_setting s WHERE s.setdatabase = $1`,
    [src.oid],
  );
  for (const s of settings.rows) {
    const i = s.setting.indexOf("=");
    const name = s.setting.slice(0, i);
    const value = s.setting.slice(i + 1);
    const target = s.role === null ? `DATABASE ${ident(to)}` : `ROLE ${ident(s.role)} IN DATABASE ${ident(to)}`;
    await run(`ALTER ${target} SET ${ident(name)} TO ${settingValue(name, value)}`, "settings");
  }
  if (src.connlimit !== -1) await run(`ALTER DATABASE ${ident(to)} CONNECTION LIMIT ${Number(src.connlimit)}`, "connection limit");
  if (src.comment !== null) await run(`COMMENT ON DATABASE ${ident(to)} IS ${lit(src.comment)}`, "comment");
  return { copied: [...new Set(done)], failed };
}

/** Settings the server keeps as a list (flattened, elements double-quoted where needed): each element a literal. */
const LIST_SETTINGS = new Set(["search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries", "shared_preload_libraries"]);

/** A stored setting value as ALTER ... SET accepts it (as pg_dump writes it). */
export function settingValue(name: string, value: string): string {
  if (!LIST_SETTINGS.has(name.toLowerCase())) return lit(value);
  const items: string[] = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (quoted) {
      if (ch === '"' && value[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") {
      items.push(cur.trim());
      cur = "";
    } else cur += ch;
  }
  items.push(cur.trim());
  return items.filter((x) => x !== "" || items.length === 1).map(lit).join(", ");
}

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
function lit(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
