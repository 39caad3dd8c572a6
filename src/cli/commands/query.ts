import { readFileSync } from "node:fs";
import { Option, type Command } from "commander";
import { DbkeepError } from "../../core/errors.js";
import { openQueryConnection } from "../../query/connection.js";
import { resolveDatasource } from "../../query/datasource.js";
import { checkStatement, queryToFile, streamQuery, type OutputFormat, type QuerySummary } from "../../query/run.js";
import type { BinaryEncoding } from "../../query/cells.js";
import type { Context } from "../context.js";
import { wholeNumber } from "../options.js";

interface QueryFlags {
  csv?: string | boolean;
  json?: boolean;
  ndjson?: boolean;
  table?: boolean;
  output?: string;
  binary?: BinaryEncoding;
  header?: boolean;
  maxRows?: string;
  allowWrite?: boolean;
  yes?: boolean;
}

export function registerQuery(program: Command, ctx: () => Context): void {
  program
    .command("query")
    .description("run one SQL statement and print or export its result (read-only unless --allow-write)")
    .argument("<datasource>", "datasource name from the config, or a URL (postgres://..., mysql://..., sqlite:./app.db)")
    .argument("<sql>", "one SQL statement; - reads it from stdin")
    .option("--csv [file]", "CSV (RFC 4180) into FILE, or to stdout without one")
    .option("--json", "one JSON array of row objects")
    .option("--ndjson", "one JSON object per line")
    .option("--table", "a table for people (the first --max-rows rows)")
    .option("-o, --output <file>", "write the result into FILE instead of stdout")
    .addOption(new Option("--binary <encoding>", "binary columns (bytea, BLOB) as hex or base64").choices(["hex", "base64"]).default("hex"))
    .option("--no-header", "CSV: no header record")
    .option("--max-rows <n>", "--table: rows shown at most", wholeNumber(1), "1000")
    .option("--allow-write", "allow a statement that changes data, schema or settings")
    .option("-y, --yes", "with --allow-write: do not ask for confirmation")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep query appdb "SELECT id, email FROM users WHERE active" --csv users.csv
  dbkeep query postgres://app@localhost/shop "SELECT * FROM orders" --ndjson > orders.ndjson
  dbkeep query sqlite:./app.db "SELECT * FROM events LIMIT 20" --table
  dbkeep query 'mysql://app@db.internal/shop' "SELECT * FROM products" --json -o products.json
  dbkeep query appdb - --csv report.csv < report.sql
  dbkeep query appdb "DELETE FROM sessions WHERE expires < now()" --allow-write --yes

Rows stream from the server to the output: a result of any size uses little memory. Without a format
option the result is a table on a terminal and CSV otherwise. CSV: CRLF line ends, a header record,
NULL as an empty field and the empty string as "" (see docs/query.md). Statements that may change
anything are refused (exit 2) unless --allow-write; read-only statements also run in a read-only
transaction, so a write the check missed fails on the server.`,
    )
    .action(async (datasource: string, sqlArg: string, flags: QueryFlags) => {
      const c = ctx();
      const formats = (["csv", "json", "ndjson", "table"] as const).filter((f) => flags[f] !== undefined && flags[f] !== false);
      if (formats.length > 1) throw new DbkeepError("USAGE", `choose one output format, not ${formats.map((f) => `--${f}`).join(" and ")}`);
      const format: OutputFormat = formats[0] ?? (process.stdout.isTTY && !flags.output ? "table" : "csv");
      const csvFile = typeof flags.csv === "string" && flags.csv !== "-" ? flags.csv : undefined;
      if (csvFile && flags.output) throw new DbkeepError("USAGE", "give the file once: --csv FILE or -o FILE");
      const file = csvFile ?? (flags.output && flags.output !== "-" ? flags.output : undefined);
      const maxRows = Number(flags.maxRows);
      if (!Number.isInteger(maxRows) || maxRows < 1) throw new DbkeepError("USAGE", `--max-rows must be a positive whole number, not "${flags.maxRows}"`);
      const sql = sqlArg === "-" ? readFileSync(0, "utf8") : sqlArg;

      const ds = resolveDatasource(datasource, () => c.config(), (m) => c.log.warn(m));
      const dialect = ds.section.engine === "sqlite" ? "sqlite" : ds.section.engine.startsWith("postgres") ? "postgres" : ds.section.engine === "mysql" || ds.section.engine === "mariadb" ? "mysql" : undefined;
      if (!dialect) {
        throw new DbkeepError("USAGE", `queries are not available for ${ds.section.engine} datasources`, { hint: "query and console work with PostgreSQL, MySQL/MariaDB and SQLite" });
      }
      const { text, classification } = checkStatement(sql, dialect, flags.allowWrite ?? false);
      if (classification.write) {
        const what = classification.reasons.join("; ");
        if (!flags.yes) {
          if (!c.interactive) {
            throw new DbkeepError("USAGE", `this statement may change data, schema or the server (${what}) and there is no terminal to confirm it`, { hint: "add --yes to run it without asking" });
          }
          if (!(await c.confirm(`Run this statement on ${ds.name}? It may change data, schema or the server (${what}).`))) {
            process.stderr.write("not run: nothing was changed\n");
            process.exitCode = 1;
            return;
          }
        }
      }

      const conn = await openQueryConnection(ds.section, { secret: ds.secret, oneOff: ds.oneOff });
      let summary: QuerySummary;
      try {
        const output = { format, binary: flags.binary ?? "hex", header: flags.header ?? true, maxRows };
        const run = { write: classification.write, output, signal: c.signal };
        summary = file ? await queryToFile(conn, text, file, run) : await streamQuery(conn, text, { ...run, out: process.stdout });
      } finally {
        await conn.close();
      }
      if (summary.kind === "done") {
        const rows = summary.rowCount ?? 0;
        if (format === "json" || format === "ndjson") process.stdout.write(JSON.stringify({ command: summary.command, rows: summary.rowCount }) + "\n");
        else process.stderr.write(`${summary.command}: ${rows} row${rows === 1 ? "" : "s"} affected\n`);
        return;
      }
      if (format === "table" && !file) {
        process.stdout.write(summary.truncated ? `(first ${summary.rows} rows shown; more rows not shown: use --csv or --json for all of them)\n` : `(${summary.rows} row${summary.rows === 1 ? "" : "s"})\n`);
      }
      if (file) c.log.info({ file, rows: summary.rows }, `wrote ${summary.rows} row${summary.rows === 1 ? "" : "s"} to ${file}`);
    });
}
