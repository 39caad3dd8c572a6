/**
 * A strict RFC 4180 parser for the tests: CRLF record ends, quoted fields with doubled quotes, and an empty unquoted
 * field read as null (how dbkeep writes NULL). Throws on anything else, e.g. a bare quote or a lone LF outside quotes.
 */
export function parseCsv(text: string): (string | null)[][] {
  const records: (string | null)[][] = [];
  const unquoted = /[^",\r\n]*/y;
  let i = 0;
  while (i < text.length) {
    const record: (string | null)[] = [];
    for (;;) {
      let field: string | null;
      if (text[i] === '"') {
        let v = "";
        let j = i + 1;
        for (;;) {
          const q = text.indexOf('"', j);
          if (q < 0) throw new Error(`unterminated quoted field at ${i}`);
          v += text.slice(j, q);
          if (text[q + 1] === '"') {
            v += '"';
            j = q + 2;
          } else {
            i = q + 1;
            break;
          }
        }
        field = v;
      } else {
        unquoted.lastIndex = i;
        const m = unquoted.exec(text)!;
        field = m[0] === "" ? null : m[0];
        i += m[0].length;
      }
      record.push(field);
      if (text[i] === ",") {
        i++;
        continue;
      }
      if (text[i] === "\r" && text[i + 1] === "\n") {
        i += 2;
        break;
      }
      throw new Error(`expected a comma or CRLF at offset ${i}, found ${JSON.stringify(text.slice(i, i + 10))}`);
    }
    records.push(record);
  }
  return records;
}
