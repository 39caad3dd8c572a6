import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { settingValue } from "../../src/engines/postgres/database-props.js";
import { createDb, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, tempDir } from "../helpers/env.js";

const SRC = "dbkeep_it_props_src";
const DST = "dbkeep_it_props_dst";
const ROLE = "dbkeep_it_props_app";
const available = await pgAvailable();

/** What belongs to the database itself: privileges, settings, connection limit, comment. */
async function propsOf(db: string) {
  const [d] = await pgQuery<{ acl: string[] | null; connlimit: number; comment: string | null }>(
    "postgres",
    "SELECT datacl::text[] AS acl, datconnlimit AS connlimit, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1",
    [db],
  );
  const settings = await pgQuery<{ role: string | null; setting: string }>(
    "postgres",
    `SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END AS role, unnest(s.setconfig) AS setting
       FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1 ORDER BY 1 NULLS FIRST, 2`,
    [db],
  );
  return { acl: [...(d?.acl ?? [])].sort(), connlimit: d?.connlimit, comment: d?.comment, settings };
}

describe("setting values as ALTER ... SET takes them", () => {
  it("splits list settings into literals and quotes the rest", () => {
    expect(settingValue("search_path", '"$user", public, "My Schema"')).toBe("'$user', 'public', 'My Schema'");
    expect(settingValue("search_path", '""')).toBe("''");
    expect(settingValue("work_mem", "8MB")).toBe("'8MB'");
    expect(settingValue("application_name", "it's")).toBe("'it''s'");
  });
});

describe.skipIf(!available)("restoring over an existing PostgreSQL database", () => {
  beforeAll(async () => {
    await dropDb(SRC);
    await dropDb(DST);
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${ROLE}`);
    await pgQuery("postgres", `CREATE ROLE ${ROLE} LOGIN`);
    await createDb(SRC);
    await pgQuery(SRC, "CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, v text); INSERT INTO app.t VALUES (1, 'restored')");
    await createDb(DST);
    await pgQuery(DST, "CREATE TABLE stale (x int)");
    await pgQuery("postgres", `REVOKE ALL ON DATABASE ${DST} FROM PUBLIC`);
    await pgQuery("postgres", `GRANT CONNECT, TEMPORARY ON DATABASE ${DST} TO ${ROLE}`);
    await pgQuery("postgres", `ALTER DATABASE ${DST} SET search_path TO app, "$user", public`);
    await pgQuery("postgres", `ALTER DATABASE ${DST} SET work_mem TO '8MB'`);
    await pgQuery("postgres", `ALTER ROLE ${ROLE} IN DATABASE ${DST} SET statement_timeout TO '5s'`);
    await pgQuery("postgres", `ALTER DATABASE ${DST} CONNECTION LIMIT 42`);
    await pgQuery("postgres", `COMMENT ON DATABASE ${DST} IS 'the app''s database'`);
  });

  afterAll(async () => {
    await dropDb(SRC);
    await dropDb(DST);
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${ROLE}`);
  });

  it("keeps the database's privileges, settings, connection limit and comment, and replaces its content", async () => {
    const before = await propsOf(DST);
    expect(before.settings.length).toBe(3);
    const store = join(tempDir(), "backups");
    const b = dbkeep(["backup", pgUrl(SRC), "--to", store, "--compression", "zstd"]);
    expect(b.code, b.stderr).toBe(0);
    const r = dbkeep(["restore", store, "latest", "--to", pgUrl(DST), "--auto-confirm", "--log-format", "text"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`kept the privileges, settings, connection limit, comment of database ${DST}`);
    expect(await pgQuery(DST, "SELECT v FROM app.t")).toEqual([{ v: "restored" }]);
    expect(await pgQuery(DST, "SELECT to_regclass('public.stale') AS t")).toEqual([{ t: null }]);
    expect(await propsOf(DST)).toEqual(before);
    // The settings take effect as before in a new session.
    const [seen] = await pgQuery<{ path: string; mem: string }>(DST, "SELECT current_setting('search_path') AS path, current_setting('work_mem') AS mem");
    expect(seen).toEqual({ path: 'app, "$user", public', mem: "8MB" });
  });
});
