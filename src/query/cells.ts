/**
 * What a query yields per column value, the same for every engine:
 * - `null`: SQL NULL;
 * - a string: the server's text of the value (dates, times, UUIDs, arrays ... exactly as the server prints them);
 * - a Buffer: binary data (bytea, BLOB, BINARY, BIT), written as hex or base64;
 * - `Num`: a number in the server's own text, so that bigint and numeric keep every digit;
 * - `RawJson`: a json / jsonb value in the server's text, embedded as it is in JSON output;
 * - a boolean, a JS number or a bigint (SQLite's REAL and INTEGER, PostgreSQL's bool).
 */
export type Cell = null | string | Buffer | Num | RawJson | boolean | number | bigint;

export class Num {
  constructor(readonly text: string) {}
}

export class RawJson {
  constructor(readonly text: string) {}
}

export type BinaryEncoding = "hex" | "base64";

const JSON_NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

/** A value as CSV and the table show it (before quoting); NULL is undefined. */
export function cellText(v: Cell, binary: BinaryEncoding): string | undefined {
  if (v === null) return undefined;
  if (typeof v === "string") return v;
  if (Buffer.isBuffer(v)) return v.toString(binary);
  if (v instanceof Num || v instanceof RawJson) return v.text;
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : v > 0 ? "Infinity" : v < 0 ? "-Infinity" : "NaN";
  return String(v);
}

/** A value as JSON text: numbers stay exact (bare when they are valid JSON numbers), binary is a hex/base64 string. */
export function cellJson(v: Cell, binary: BinaryEncoding): string {
  if (v === null) return "null";
  if (typeof v === "string") return JSON.stringify(v);
  if (Buffer.isBuffer(v)) return JSON.stringify(v.toString(binary));
  if (v instanceof Num) return JSON_NUMBER.test(v.text) ? v.text : JSON.stringify(v.text);
  // Line breaks in JSON text can only be whitespace between tokens: a space keeps NDJSON one row per line.
  if (v instanceof RawJson) return v.text.trim() === "" ? "null" : v.text.replace(/[\r\n]+/g, " ");
  if (typeof v === "number") return Number.isFinite(v) ? JSON.stringify(v) : JSON.stringify(cellText(v, binary));
  if (typeof v === "bigint") return v.toString();
  return v ? "true" : "false";
}
