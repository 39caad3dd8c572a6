import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { once } from "node:events";
import type { Writable } from "node:stream";
import { DbkeepError } from "../core/errors.js";
import { fsyncPath } from "../core/fsync.js";
import type { BinaryEncoding } from "./cells.js";
import { classify, type Classification, type Dialect } from "./classify.js";
import type { QueryConnection } from "./connection.js";
import { createCsvWriter, createJsonWriter, createNdjsonWriter, createTableWriter, type RowWriter } from "./writers.js";

export type OutputFormat = "csv" | "json" | "ndjson" | "table";

export interface OutputOptions {
  format: OutputFormat;
  binary?: BinaryEncoding;
  /** CSV: a header record with the column names (default true). */
  header?: boolean;
  /** table: rows shown at most (default 1000). */
  maxRows?: number;
}

export type QuerySummary =
  | { kind: "rows"; columns: string[]; rows: number; /** table: more rows existed than were shown */ truncated: boolean }
  | { kind: "done"; command: string; rowCount: number | null };

/**
 * Checks a statement before it is sent: exactly one statement, and a write only with `allowWrite`. Returns the
 * statement's text (without a trailing semicolon) and its classification.
 */
export function checkStatement(sql: string, dialect: Dialect, allowWrite: boolean): { text: string; classification: Classification } {
  const c = classify(sql, dialect);
  if (c.statements.length === 0) throw new DbkeepError("USAGE", "no SQL statement given", { hint: `e.g. "SELECT * FROM orders LIMIT 10"` });
  if (c.multiple) {
    throw new DbkeepError("USAGE", `${c.statements.length > 1 ? c.statements.length : "several"} statements given; one statement at a time`, {
      hint: "run each statement on its own (a script belongs in psql or the mariadb client)",
    });
  }
  if (c.write && !allowWrite) {
    throw new DbkeepError("USAGE", `refused: this statement may change data, schema or the server (${c.reasons.join("; ")})`, {
      hint: "queries only read unless you add --allow-write (asks for confirmation on a terminal; --yes skips the question)",
    });
  }
  return { text: c.statements[0]!.text, classification: c };
}

export function createWriter(o: OutputOptions): RowWriter & { readonly full?: boolean } {
  const binary = o.binary ?? "hex";
  switch (o.format) {
    case "csv":
      return createCsvWriter({ binary, header: o.header ?? true });
    case "json":
      return createJsonWriter({ binary });
    case "ndjson":
      return createNdjsonWriter({ binary });
    case "table":
      return createTableWriter({ binary, maxRows: o.maxRows ?? 1000 });
  }
}

const FLUSH_BYTES = 64 * 1024;

/** Collects text and writes it in 64 KiB pieces, waiting for the destination to drain: backpressure end to end. */
class Sink {
  #buf: string[] = [];
  #size = 0;
  #closed = false;
  constructor(private readonly out: Writable) {
    out.on("error", (err: NodeJS.ErrnoException) => {
      // The reader went away (`| head`): stop reading rows, as other tools do.
      if (err.code === "EPIPE") this.#closed = true;
    });
  }
  get closed(): boolean {
    return this.#closed || this.out.destroyed;
  }
  async push(text: string): Promise<void> {
    if (!text) return;
    this.#buf.push(text);
    this.#size += text.length;
    if (this.#size >= FLUSH_BYTES) await this.flush();
  }
  async flush(): Promise<void> {
    if (this.#size === 0 || this.closed) return;
    const chunk = this.#buf.join("");
    this.#buf = [];
    this.#size = 0;
    if (!this.out.write(chunk)) {
      const out = this.out;
      await new Promise<void>((resolve) => {
        const done = () => {
          out.off("drain", done);
          out.off("close", done);
          out.off("error", done);
          resolve();
        };
        out.on("drain", done);
        out.on("close", done);
        out.on("error", done);
      });
    }
  }
}

/** Runs one (already checked) statement and writes its rows to `out` as they arrive. */
export async function streamQuery(
  conn: QueryConnection,
  sql: string,
  o: { write: boolean; output: OutputOptions; out: Writable; signal?: AbortSignal; batchRows?: number },
): Promise<QuerySummary> {
  const result = await conn.execute(sql, { write: o.write, ...(o.signal ? { signal: o.signal } : {}), ...(o.batchRows ? { batchRows: o.batchRows } : {}) });
  if (result.kind === "done") return result;
  const writer = createWriter(o.output);
  const sink = new Sink(o.out);
  let count = 0;
  let truncated = false;
  await sink.push(writer.begin(result.columns));
  for await (const row of result.rows) {
    if (writer.full) {
      truncated = true;
      break;
    }
    count++;
    await sink.push(writer.row(row));
    if (sink.closed) break;
  }
  await sink.push(writer.end());
  await sink.flush();
  return { kind: "rows", columns: result.columns, rows: count, truncated };
}

/**
 * Writes a query's result into `file`: into a private temporary file beside it first (mode 0600: query results
 * are data), renamed over `file` only when every row was written and synced, so a failed or cancelled query never
 * leaves a file that looks complete.
 */
export async function queryToFile(
  conn: QueryConnection,
  sql: string,
  file: string,
  o: { write: boolean; output: OutputOptions; signal?: AbortSignal; batchRows?: number },
): Promise<QuerySummary> {
  const tmp = join(dirname(file), `.${basename(file)}.${randomBytes(4).toString("hex")}.partial`);
  const out = createWriteStream(tmp, { mode: 0o600, flags: "wx" });
  try {
    await once(out, "open");
  } catch (err) {
    throw new DbkeepError("USAGE", `cannot write ${file}: ${(err as Error).message}`, { cause: err, hint: "check that the directory exists and is writable" });
  }
  let failure: unknown;
  out.on("error", (err) => (failure ??= err));
  try {
    const summary = await streamQuery(conn, sql, { ...o, out });
    out.end();
    await once(out, "close");
    if (failure) throw failure;
    if (summary.kind === "done") {
      await rm(tmp, { force: true });
      return summary;
    }
    await fsyncPath(tmp);
    await rename(tmp, file);
    return summary;
  } catch (err) {
    out.destroy();
    await rm(tmp, { force: true });
    if (failure && !(err instanceof DbkeepError)) throw new DbkeepError("ENGINE_FAILED", `cannot write ${file}: ${(failure as Error).message}`, { cause: failure });
    throw err;
  }
}
