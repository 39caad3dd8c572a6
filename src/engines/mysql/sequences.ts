import { mkdir, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Transform, type TransformCallback } from "node:stream";

/**
 * MariaDB stores a column default `NEXT VALUE FOR seq` as `nextval(\`db\`.\`seq\`)`, with the database it was created
 * in, and mariadb-dump and mydumper write it so. Restored under another name, such a table would keep drawing its
 * numbers from the source database's sequence (or fail where that database does not exist). Restores therefore drop
 * the source database's name from these references, so that they resolve to the database the dump is applied to.
 *
 * Only column definitions are touched: lines of a CREATE TABLE that begin with two spaces and a backquote, as both
 * tools write them. Row data never starts a line that way (INSERT statements are whole lines, and strings in them
 * have their line breaks escaped), so the contents of tables are never changed.
 */
export function sequencePattern(db: string): Buffer {
  return Buffer.from("val(`" + db.replaceAll("`", "``") + "`.");
}

const FUNCTIONS = ["nextval(", "lastval(", "setval("].map((f) => Buffer.from(f));
const COLUMN_LINE = Buffer.from("  `");

/** `data` with the database name dropped from the sequence references of its column lines. */
export function unqualifyLines(data: Buffer, db: string, pattern = sequencePattern(db)): Buffer[] {
  const out: Buffer[] = [];
  let from = 0;
  let at = data.indexOf(pattern);
  while (at !== -1) {
    const lineStart = data.lastIndexOf(10, at) + 1;
    const fn = FUNCTIONS.find((f) => at - (f.length - 4) >= 0 && data.subarray(at - (f.length - 4), at + 4).equals(f));
    if (fn && data.subarray(lineStart, lineStart + COLUMN_LINE.length).equals(COLUMN_LINE)) {
      // keep "…val(", drop "`db`."
      out.push(data.subarray(from, at + 4));
      from = at + pattern.length;
    }
    at = data.indexOf(pattern, at + pattern.length);
  }
  out.push(data.subarray(from));
  return out;
}

/**
 * The same on a stream. A line that ends in the next chunk waits for it only while it may be a column line (short);
 * any other line (a long INSERT) goes out as it comes, so memory and copying stay at about one chunk.
 */
export class UnqualifySequences extends Transform {
  readonly #db: string;
  readonly #pattern: Buffer;
  #carry: Buffer | undefined;
  /** The current line began in an earlier chunk and is not a column line: pass it through to its end. */
  #passLine = false;

  constructor(db: string) {
    super();
    this.#db = db;
    this.#pattern = sequencePattern(db);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let data = chunk;
    if (this.#passLine) {
      const nl = chunk.indexOf(10);
      if (nl === -1) {
        this.push(chunk);
        return cb();
      }
      this.push(chunk.subarray(0, nl + 1));
      data = chunk.subarray(nl + 1);
      this.#passLine = false;
    } else if (this.#carry) {
      data = Buffer.concat([this.#carry, chunk]);
      this.#carry = undefined;
    }
    const end = data.lastIndexOf(10) + 1;
    if (end > 0) for (const part of unqualifyLines(data.subarray(0, end), this.#db, this.#pattern)) if (part.length) this.push(part);
    const rest = data.subarray(end);
    if (rest.length >= COLUMN_LINE.length && (!rest.subarray(0, COLUMN_LINE.length).equals(COLUMN_LINE) || rest.length > 65536)) {
      for (const part of unqualifyLines(rest, this.#db, this.#pattern)) if (part.length) this.push(part);
      this.#passLine = true;
    } else if (rest.length > 0) {
      this.#carry = Buffer.from(rest);
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    if (this.#carry) for (const part of unqualifyLines(this.#carry, this.#db, this.#pattern)) if (part.length) this.push(part);
    cb();
  }
}

/** mydumper's schema files of an unpacked dump, rewritten in place. */
export async function unqualifyMydumperSchemas(dir: string, db: string): Promise<void> {
  for (const f of await readdir(dir)) {
    if (!f.endsWith("-schema.sql")) continue;
    const path = join(dir, f);
    const before = await readFile(path);
    if (before.indexOf(sequencePattern(db)) === -1) continue;
    await writeFile(path, Buffer.concat(unqualifyLines(before, db)));
  }
}

/**
 * myloader creates tables in no particular order, so a table whose default draws from a sequence can come before
 * the sequence and fail. The sequences' schema files (mydumper writes a sequence as `CREATE TABLE … SEQUENCE=1`) are
 * moved out of the dump into `into`, to be created first; their data files stay and set each sequence's state.
 */
export async function setSequencesAside(dir: string, into: string): Promise<string[]> {
  const moved: string[] = [];
  for (const f of (await readdir(dir)).sort()) {
    if (!f.endsWith("-schema.sql")) continue;
    const text = await readFile(join(dir, f), "utf8");
    if (!/\)\s*ENGINE=\w+\s+SEQUENCE=1\s*;/.test(text)) continue;
    if (moved.length === 0) await mkdir(into, { mode: 0o700 });
    await rename(join(dir, f), join(into, f));
    moved.push(join(into, f));
  }
  return moved;
}
