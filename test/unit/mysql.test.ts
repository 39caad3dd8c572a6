import { describe, expect, it } from "vitest";
import { sourceFromUrl } from "../../src/config/urls.js";
import { parseConfig } from "../../src/config/load.js";
import { explainMysqlError, parseVersion, quoteOption } from "../../src/engines/mysql/index.js";

function problemsOf(yaml: string): string[] {
  try {
    parseConfig(yaml);
    return [];
  } catch (err) {
    return ((err as { details?: string }).details ?? "").split("\n").map((l) => l.trim());
  }
}

describe("mysql / mariadb URLs", () => {
  it("reads host, port, user, database and datasource keys from the query", () => {
    const s = sourceFromUrl("mysql://app@db.internal:3307/shop?tool=mydumper&threads=8&compression=zstd&level=5");
    expect(s.engine).toBe("mysql");
    expect(s.options).toMatchObject({ engine: "mysql", host: "db.internal", port: 3307, user: "app", database: "shop", tool: "mydumper", threads: 8, compression: "zstd", compression_level: 5 });
    expect(s.warnings).toEqual([]);
  });

  it("takes mariadb://, an empty host, a socket, a list of databases or all of them", () => {
    expect(sourceFromUrl("mariadb:///shop?socket=/run/mysqld/mysqld.sock").options).toMatchObject({ engine: "mariadb", host: "localhost", socket: "/run/mysqld/mysqld.sock", database: "shop" });
    expect(sourceFromUrl("mysql://root@127.0.0.1/?databases=a,b").options).toMatchObject({ databases: ["a", "b"] });
    expect(sourceFromUrl("mysql://root@127.0.0.1/?all_databases=true").options).toMatchObject({ all_databases: true });
  });

  it("warns about a password in the URL and refuses a URL without a database", () => {
    const s = sourceFromUrl("mysql://app:pw@h/shop");
    expect(s.options.password).toBe("pw");
    expect(s.warnings[0]).toMatch(/password in a URL/);
    expect(() => sourceFromUrl("mysql://app@h/")).toThrow(/no database in mysql:\/\/app@h\//);
    expect(() => sourceFromUrl("mysql://app@h/shop?all_databases=true")).toThrow(/give only one of database, all_databases/);
  });
});

describe("mysql datasource config", () => {
  const ds = (body: string) => problemsOf(`datasources:\n  m: { engine: mysql, ${body} }\n`);

  it("needs exactly one of database, databases, all_databases", () => {
    expect(ds("host: h, database: a")).toEqual([]);
    expect(ds("host: h, databases: [a, b]")).toEqual([]);
    expect(ds("host: h")).toContain("datasources.m.database: give database, databases (a list) or all_databases: true");
    expect(ds("database: a, databases: [b]")).toContain("datasources.m.database: give only one of database, databases");
  });

  it("rejects unknown keys, a format that contradicts the tool, and two password sources", () => {
    expect(ds("database: a, jobs: 2")).toContain('datasources.m: unknown key "jobs"');
    expect(ds("database: a, tool: mydumper, format: plain")).toContain("datasources.m.format: format plain does not go with tool mydumper");
    expect(ds("database: a, password: x, password_env: Y")).toContain("datasources.m.password: give only one of password, password_env");
  });
});

describe("mysql engine helpers", () => {
  it("quotes option file values so that every character survives the client's parser", () => {
    expect(quoteOption(`p"w#x\\y 'q; z`)).toBe(`"p\\"w#x\\\\y 'q; z"`);
    expect(quoteOption("a\nb\tc")).toBe('"a\\nb\\tc"');
  });

  it("reads tool versions of MariaDB, MySQL and mydumper", () => {
    expect(parseVersion("mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)")).toBe("10.11.19-MariaDB");
    expect(parseVersion("mariadb-dump from 11.4.2-MariaDB, client 10.19 for Linux (x86_64)")).toBe("11.4.2-MariaDB");
    expect(parseVersion("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)")).toBe("8.0.36");
    expect(parseVersion("mydumper 0.10.0, built against MySQL 10.11.14")).toBe("0.10.0");
  });

  it("turns the tools' errors into codes and hints", () => {
    expect(explainMysqlError("ERROR 1045 (28000): Access denied for user 'x'@'h' (using password: YES)")).toMatchObject({ code: "CONNECTION_FAILED", hint: expect.stringMatching(/password_env/) });
    expect(explainMysqlError("mysqldump: Got error: 2002: \"Can't connect to server on 'h' (115)\" when trying to connect")).toMatchObject({ code: "CONNECTION_FAILED", retryable: true });
    expect(explainMysqlError("ERROR 2005 (HY000): Unknown server host 'nohost' (-2)")).toMatchObject({ code: "CONNECTION_FAILED", retryable: true });
    expect(explainMysqlError("mysqldump: Got error: 1049: \"Unknown database 'x'\" when selecting the database")).toMatchObject({ hint: expect.stringMatching(/database name/) });
    expect(explainMysqlError("Error 2013: Lost connection to server during query when dumping table `t` at row: 5")).toMatchObject({ retryable: true });
    expect(explainMysqlError("There are queries in PROCESSLIST running longer than 60s, aborting dump,")).toMatchObject({ retryable: true });
    expect(explainMysqlError("something else")).toBeUndefined();
  });
});
