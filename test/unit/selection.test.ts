import { describe, expect, it } from "vitest";
import { validateConfig } from "../../src/config/load.js";
import { parsePattern, pgExactPattern, resolveSelection } from "../../src/core/selection.js";

const T = (schema: string, table: string) => ({ schema, table });
const existing = [T("public", "orders"), T("public", "orders_2024"), T("public", "Users"), T("app", "a.b"), T("app", "log*"), T("app", "logs"), T("pg_catalog", "pg_class")];
const schemas = ["public", "app", "pg_catalog", "information_schema"];
const pg = { fold: true, what: "database x", withSchemas: true };
const names = (r: { tables: { schema: string; table: string }[] }) => r.tables.map((t) => `${t.schema}.${t.table}`);

describe("table selection patterns", () => {
  it("globs match across schemas, unquoted names fold to lower case as in pg_dump, quotes keep case and dots", () => {
    expect(names(resolveSelection({ tables: ["orders*"] }, existing, schemas, pg))).toEqual(["public.orders", "public.orders_2024"]);
    expect(() => resolveSelection({ tables: ["Users"] }, existing, schemas, pg)).toThrow(/matches no table/);
    expect(names(resolveSelection({ tables: ['"Users"'] }, existing, schemas, pg))).toEqual(["public.Users"]);
    expect(names(resolveSelection({ tables: ['app."a.b"'] }, existing, schemas, pg))).toEqual(["app.a.b"]);
    expect(names(resolveSelection({ tables: ['app."log*"'] }, existing, schemas, pg))).toEqual(["app.log*"]);
    expect(names(resolveSelection({ tables: ["app.log*"] }, existing, schemas, pg))).toEqual(["app.log*", "app.logs"]);
    expect(parsePattern('"My""Q".t?', true).schema?.text).toBe('My"Q');
  });

  it("schemas, exclusions, and system schemas that are never selected", () => {
    expect(names(resolveSelection({ schemas: ["app"], exclude_tables: ["logs"] }, existing, schemas, pg))).toEqual(["app.a.b", "app.log*"]);
    expect(names(resolveSelection({ exclude_schemas: ["app"] }, existing, schemas, pg))).toEqual(["public.Users", "public.orders", "public.orders_2024"]);
    expect(names(resolveSelection({ tables: ["*.*"] }, existing, schemas, pg))).not.toContain("pg_catalog.pg_class");
    expect(() => resolveSelection({ tables: ["pg_catalog.*"] }, existing, schemas, pg)).toThrow(/system schema/);
    expect(() => resolveSelection({ tables: ["orders"], exclude_tables: ["orders"] }, existing, schemas, pg)).toThrow(/leaves no table/);
    const r = resolveSelection({ exclude_tables: ["nope"] }, existing, schemas, pg);
    expect(r.warnings[0]).toMatch(/matches no table/);
  });

  it("MySQL patterns are case-sensitive table names without schemas", () => {
    const my = { fold: false, what: "database d", withSchemas: false };
    const tables = [T("d", "Users"), T("d", "users_old")];
    expect(names(resolveSelection({ tables: ["Users"] }, tables, ["d"], my))).toEqual(["d.Users"]);
    expect(() => resolveSelection({ tables: ["d.Users"] }, tables, ["d"], my)).toThrow(/names a schema/);
    expect(() => resolveSelection({ schemas: ["d"] }, tables, ["d"], my)).toThrow(/PostgreSQL only/);
  });

  it("exact pg_dump patterns quote every name", () => {
    expect(pgExactPattern("app", 'we"ird.*')).toBe('"app"."we""ird.*"');
  });
});

describe("partial and differential job keys in the config", () => {
  const base = {
    datasources: { pg: { engine: "postgres", database: "app" }, lite: { engine: "sqlite", path: "/tmp/x.db" }, my: { engine: "mariadb", database: "app" } },
    stores: { local: { type: "local", path: "/tmp/b" } },
  };
  const problems = (jobs: Record<string, unknown>) => {
    try {
      validateConfig({ ...base, jobs });
      return "";
    } catch (err) {
      return (err as { details?: string }).details ?? String(err);
    }
  };

  it("accepts them where the engine has them and names every misuse with its path", () => {
    expect(problems({ a: { datasource: "pg", store: "local", tables: ["public.*"], mode: "differential", basis_columns: { "public.t": null }, full_every: "1d" } })).toBe("");
    expect(problems({ a: { datasource: "my", store: "local", exclude_tables: ["log_*"], mode: "differential", track_deletes: true } })).toBe("");
    const out = problems({
      a: { datasource: "lite", store: "local", tables: ["t"], mode: "differential" },
      b: { datasource: "my", store: "local", schemas: ["x"] },
      c: { datasource: "pg", store: "local", track_deletes: true },
    });
    expect(out).toContain("jobs.a.tables: tables exists for PostgreSQL and MySQL/MariaDB datasources only");
    expect(out).toContain("jobs.a.mode: mode: differential exists for PostgreSQL and MySQL/MariaDB datasources only");
    expect(out).toContain("jobs.b.schemas: schemas exists for PostgreSQL datasources only");
    expect(out).toContain("jobs.c.track_deletes: track_deletes goes with mode: differential");
  });
});
