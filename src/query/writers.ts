import { cellJson, cellText, Num, type BinaryEncoding, type Cell } from "./cells.js";

/**
 * Turns rows into text chunks. begin() is called once with the column names, row() per row, end() last; each
 * returns the text to write (possibly empty). Writers hold no rows: memory does not grow with the result.
 */
export interface RowWriter {
  begin(columns: string[]): string;
  row(cells: Cell[]): string;
  end(): string;
}

export interface WriterOptions {
  binary?: BinaryEncoding;
}

/** RFC 4180: a field is quoted when it holds a comma, a double quote, CR or LF; quotes inside are doubled. */
export function csvField(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * CSV as RFC 4180 describes it: CRLF after every record (the last one too), a header record with the column names
 * (unless `header: false`). NULL is an empty unquoted field; an empty string is `""`, so the two stay apart.
 */
export function createCsvWriter(o: WriterOptions & { header?: boolean } = {}): RowWriter {
  const binary = o.binary ?? "hex";
  const field = (v: Cell) => {
    const t = cellText(v, binary);
    if (t === undefined) return "";
    return t === "" ? '""' : csvField(t);
  };
  return {
    begin: (columns) => (o.header === false ? "" : columns.map(csvField).join(",") + "\r\n"),
    row: (cells) => cells.map(field).join(",") + "\r\n",
    end: () => "",
  };
}

/** Object keys for the columns: a repeated name gets _2, _3 ... so that no value is lost in an object. */
export function uniqueKeys(columns: string[]): string[] {
  const seen = new Set<string>();
  return columns.map((name) => {
    let key = name;
    for (let n = 2; seen.has(key); n++) key = `${name}_${n}`;
    seen.add(key);
    return key;
  });
}

function objectWriter(o: WriterOptions, format: "array" | "ndjson"): RowWriter {
  const binary = o.binary ?? "hex";
  let keys: string[] = [];
  let first = true;
  const object = (cells: Cell[]) => "{" + cells.map((v, i) => `${keys[i]}:${cellJson(v, binary)}`).join(",") + "}";
  return {
    begin: (columns) => {
      keys = uniqueKeys(columns).map((k) => JSON.stringify(k));
      return format === "array" ? "[" : "";
    },
    row: (cells) => {
      if (format === "ndjson") return object(cells) + "\n";
      const sep = first ? "\n" : ",\n";
      first = false;
      return sep + object(cells);
    },
    end: () => (format === "array" ? (first ? "]\n" : "\n]\n") : ""),
  };
}

/** One JSON array of row objects, written as the rows come (one row per line). */
export function createJsonWriter(o: WriterOptions = {}): RowWriter {
  return objectWriter(o, "array");
}

/** Newline-delimited JSON: one object per line. */
export function createNdjsonWriter(o: WriterOptions = {}): RowWriter {
  return objectWriter(o, "ndjson");
}

const MAX_WIDTH = 60;

// eslint-disable-next-line no-control-regex -- control characters are exactly what is replaced here
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g;

function display(v: Cell, binary: BinaryEncoding): string {
  const t = cellText(v, binary);
  if (t === undefined) return "NULL";
  const shown = t.replace(/\r/g, "\\r").replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(CONTROL, "?");
  const chars = [...shown];
  return chars.length > MAX_WIDTH ? chars.slice(0, MAX_WIDTH - 1).join("") + "…" : shown;
}

const numeric = (v: Cell) => typeof v === "number" || typeof v === "bigint" || v instanceof Num;

/**
 * A table for people: at most `maxRows` rows are kept (to size the columns), then printed at end(); NULL shows as
 * NULL, line breaks and tabs as \n \r \t, long values are cut at 60 characters. `limited` tells whether rows were
 * left out, which the caller finds out by offering more.
 */
export function createTableWriter(o: WriterOptions & { maxRows: number }): RowWriter & { readonly full: boolean } {
  const binary = o.binary ?? "hex";
  let header: string[] = [];
  const rows: { text: string[]; right: boolean[] }[] = [];
  return {
    get full() {
      return rows.length >= o.maxRows;
    },
    begin: (columns) => {
      header = columns;
      return "";
    },
    row: (cells) => {
      if (rows.length < o.maxRows) rows.push({ text: cells.map((v) => display(v, binary)), right: cells.map(numeric) });
      return "";
    },
    end: () => {
      const width = (s: string) => [...s].length;
      const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r.text[i] ?? ""))));
      const pad = (s: string, w: number, right: boolean) => (right ? " ".repeat(w - width(s)) + s : s + " ".repeat(w - width(s)));
      const lines = [
        header.map((h, i) => pad(h, widths[i]!, false)).join(" | ").trimEnd(),
        widths.map((w) => "-".repeat(w)).join("-+-"),
        ...rows.map((r) => r.text.map((t, i) => pad(t, widths[i]!, r.right[i] ?? false)).join(" | ").trimEnd()),
      ];
      return lines.join("\n") + "\n";
    },
  };
}
