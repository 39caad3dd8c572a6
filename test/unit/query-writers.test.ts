import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Num, RawJson, type Cell } from "../../src/query/cells.js";
import { complete, parseBackup, parseSql, splitWords } from "../../src/query/console.js";
import { parseCsv } from "../helpers/csv.js";
import { createCsvWriter, createJsonWriter, createNdjsonWriter, createTableWriter, csvField, uniqueKeys, type RowWriter } from "../../src/query/writers.js";

function render(w: RowWriter, columns: string[], rows: Cell[][]): string {
  return w.begin(columns) + rows.map((r) => w.row(r)).join("") + w.end();
}

describe("CSV writer", () => {
  it("quotes per RFC 4180, ends records with CRLF and keeps NULL apart from the empty string", () => {
    const out = render(createCsvWriter(), ["id", "text", "n"], [
      [new Num("1"), 'say "hi", then\r\nleave', null],
      [new Num("2"), "", "plain"],
      [3n, "ünïcødé ✓ 𝄞", "a\nb"],
    ]);
    expect(out).toBe('id,text,n\r\n1,"say ""hi"", then\r\nleave",\r\n2,"",plain\r\n3,ünïcødé ✓ 𝄞,"a\nb"\r\n');
    expect(parseCsv(out)).toEqual([["id", "text", "n"], ["1", 'say "hi", then\r\nleave', null], ["2", "", "plain"], ["3", "ünïcødé ✓ 𝄞", "a\nb"]]);
  });

  it("writes binary as hex or base64, booleans, numbers and JSON as text, and can leave out the header", () => {
    const row: Cell[] = [Buffer.from([0, 255, 65]), true, 1.5, Number.NaN, new RawJson('{"a": [1, 2]}')];
    expect(render(createCsvWriter({ header: false }), ["b", "t", "f", "nan", "j"], [row])).toBe('00ff41,true,1.5,NaN,"{""a"": [1, 2]}"\r\n');
    expect(render(createCsvWriter({ binary: "base64", header: false }), ["b"], [[Buffer.from([0, 255, 65])]])).toBe("AP9B\r\n");
  });

  it("round-trips any strings and NULLs through the parser (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.option(fc.string({ unit: "binary" }), { nil: null }), { minLength: 3, maxLength: 3 }), { maxLength: 20 }), (rows) => {
        const out = render(createCsvWriter(), ["a", "b", "c"], rows);
        expect(parseCsv(out)).toEqual([["a", "b", "c"], ...rows]);
      }),
      { numRuns: 40 },
    );
    expect(csvField("a,b")).toBe('"a,b"');
    expect(csvField("plain")).toBe("plain");
  });
});

describe("JSON writers", () => {
  const rows: Cell[][] = [
    [new Num("9007199254740993"), "x\"y\n", null, Buffer.from("hi"), new RawJson('{"k":\n[1]}'), false],
    [new Num("NaN"), "", 2.5, Buffer.alloc(0), new RawJson("null"), true],
  ];
  const cols = ["big", "s", "n", "b", "j", "ok"];

  it("--json is one array of objects with exact numbers and embedded JSON", () => {
    const out = render(createJsonWriter(), cols, rows);
    expect(out).toBe('[\n{"big":9007199254740993,"s":"x\\"y\\n","n":null,"b":"6869","j":{"k": [1]},"ok":false},\n{"big":"NaN","s":"","n":2.5,"b":"","j":null,"ok":true}\n]\n');
    expect(JSON.parse(out)).toHaveLength(2);
    expect(render(createJsonWriter(), ["a"], [])).toBe("[]\n");
  });

  it("--ndjson is one object per line; repeated column names get a suffix", () => {
    const out = render(createNdjsonWriter({ binary: "base64" }), cols, rows);
    const lines = out.trimEnd().split("\n");
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0]!)).toMatchObject({ s: 'x"y\n', b: "aGk=", j: { k: [1] } });
    expect(uniqueKeys(["a", "a", "b", "a"])).toEqual(["a", "a_2", "b", "a_3"]);
  });
});

describe("table writer", () => {
  it("shows NULL, escapes line breaks, right-aligns numbers and keeps at most maxRows rows", () => {
    const w = createTableWriter({ maxRows: 2 });
    w.begin(["id", "name"]);
    w.row([new Num("1"), "a\nb"]);
    expect(w.full).toBe(false);
    w.row([new Num("10"), null]);
    expect(w.full).toBe(true);
    w.row([new Num("11"), "never shown"]);
    expect(w.end()).toBe("id | name\n---+-----\n 1 | a\\nb\n10 | NULL\n");
  });
});

describe("console parsing and completion", () => {
  const catalog = [{ name: "customer_orders", columns: ["order_id", "customer_name"] }, { name: "audit.events", columns: ["id", "at"] }];
  it("completes commands, tables after FROM, columns and table.column", () => {
    expect(complete("ba", catalog, [])).toEqual([["backup "], "ba"]);
    expect(complete("sql SELECT * FROM cust", catalog, [])).toEqual([["customer_orders"], "cust"]);
    expect(complete("sql SELECT customer_n", catalog, [])[0]).toEqual(["customer_name"]);
    expect(complete("sql SELECT audit.events.a", catalog, [])[0]).toEqual(["audit.events.at"]);
    expect(complete("sql sel", catalog, [])[0]).toContain("select");
    expect(complete("backup --table aud", catalog, [])[0]).toEqual(["audit.events"]);
    expect(complete("backup --d", catalog, [])[0]).toEqual(["--differential"]);
    expect(complete("restore app-2026", catalog, ["app-20260101-000000", "other"])[0]).toEqual(["app-20260101-000000"]);
  });

  it("parses sql --csv with quoted paths, and backup options", () => {
    expect(parseSql(`SELECT 1 --csv "/tmp/with space/out.csv"`)).toEqual({ sql: "SELECT 1", csv: "/tmp/with space/out.csv" });
    expect(parseSql("SELECT ',' AS c")).toEqual({ sql: "SELECT ',' AS c" });
    expect(splitWords(`backup --table "odd name" b`)).toEqual(["backup", "--table", "odd name", "b"]);
    expect(parseBackup(["--table", "a", "b", "--differential"])).toEqual({ tables: ["a", "b"], differential: true });
    expect(parseBackup(["--tables=a,b"])).toEqual({ tables: ["a", "b"], differential: false });
    expect(() => parseBackup(["--table"])).toThrow(/needs a table/);
    expect(() => parseBackup(["--bogus"])).toThrow(/unknown option/);
  });
});
