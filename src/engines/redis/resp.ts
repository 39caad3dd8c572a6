import { constants as bufferConstants } from "node:buffer";
import { DbkeepError } from "../../core/errors.js";
import { Crc64 } from "./crc64.js";

/**
 * The logical dump format: Redis commands in RESP, the protocol's own framing, so that `redis-cli --pipe` can replay
 * a (decompressed) dump as well as dbkeep can:
 *
 *   ECHO "dbkeep-redis-logical 1"                  first command: what the file is
 *   FUNCTION RESTORE <payload>                      Redis 7 function libraries, when there are any
 *   SELECT <n>                                      before the keys of each database
 *   RESTORE <key> <ttl-ms, 0 = none> <payload>      one per key, DUMP's payload: binary-safe, every type
 *   ECHO "dbkeep-redis-logical end keys=<N>"         last command: the dump is complete
 *
 * RESTORE carries no REPLACE, so a manual replay into a server that has the key reports BUSYKEY instead of
 * overwriting it; dbkeep adds REPLACE when it replays after the restore was confirmed.
 */
export const LOGICAL_HEADER = "dbkeep-redis-logical 1";
export const LOGICAL_TRAILER = "dbkeep-redis-logical end keys=";

/** One command in RESP: an array of bulk strings. */
export function encodeCommand(args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`, "latin1")];
  for (const a of args) {
    const b = typeof a === "string" ? Buffer.from(a, "utf8") : a;
    parts.push(Buffer.from(`$${b.length}\r\n`, "latin1"), b, CRLF);
  }
  return Buffer.concat(parts);
}

const CRLF = Buffer.from("\r\n", "latin1");
const MAX_LINE = 32;
const MAX_ARGS = 1024;

type State = { kind: "array" } | { kind: "bulkHeader" } | { kind: "bulkBody"; buf: Buffer; filled: number } | { kind: "bulkEnd"; seen: number };

/**
 * Reads RESP commands (arrays of bulk strings, as `encodeCommand` writes them) from chunks of any size. A bulk
 * string is copied once into a buffer of its exact length, so a value of hundreds of megabytes costs its size, not
 * more. Anything that is not such a command is CORRUPT_BACKUP.
 */
export class RespReader {
  #state: State = { kind: "array" };
  #line = "";
  #args: Buffer[] = [];
  #want = 0;
  #offset = 0;

  /** Bytes consumed so far, for error messages. */
  get offset(): number {
    return this.#offset;
  }

  #corrupt(what: string): DbkeepError {
    return new DbkeepError("CORRUPT_BACKUP", `the logical Redis dump is malformed at byte ${this.#offset}: ${what}`, {
      hint: "the backup is damaged; restore another one",
    });
  }

  /** Feeds a chunk; returns the commands it completed. */
  push(chunk: Buffer): Buffer[][] {
    const out: Buffer[][] = [];
    let p = 0;
    while (p < chunk.length) {
      const st = this.#state;
      if (st.kind === "bulkBody") {
        const n = Math.min(st.buf.length - st.filled, chunk.length - p);
        chunk.copy(st.buf, st.filled, p, p + n);
        st.filled += n;
        p += n;
        if (st.filled === st.buf.length) {
          this.#args.push(st.buf);
          this.#state = { kind: "bulkEnd", seen: 0 };
        }
        continue;
      }
      if (st.kind === "bulkEnd") {
        if (chunk[p] !== CRLF[st.seen]) {
          this.#offset += p;
          throw this.#corrupt("a bulk string does not end with CRLF");
        }
        p++;
        st.seen++;
        if (st.seen === 2) this.#nextArg(out);
        continue;
      }
      // A header line: `*<n>` or `$<len>`, ended by CRLF.
      const nl = chunk.indexOf(0x0a, p);
      const end = nl === -1 ? chunk.length : nl + 1;
      this.#line += chunk.toString("latin1", p, end);
      p = end;
      if (this.#line.length > MAX_LINE) {
        this.#offset += p;
        throw this.#corrupt("a header line is too long");
      }
      if (nl === -1) continue;
      const line = this.#line;
      this.#line = "";
      const m = /^([*$])(\d+)\r\n$/.exec(line);
      if (!m) {
        this.#offset += p;
        throw this.#corrupt(`unexpected ${JSON.stringify(line.slice(0, 20))}`);
      }
      const n = Number(m[2]);
      if (st.kind === "array") {
        if (m[1] !== "*" || n < 1 || n > MAX_ARGS) {
          this.#offset += p;
          throw this.#corrupt("expected the start of a command");
        }
        this.#want = n;
        this.#args = [];
        this.#state = { kind: "bulkHeader" };
      } else {
        if (m[1] !== "$" || n > bufferConstants.MAX_LENGTH) {
          this.#offset += p;
          throw this.#corrupt("expected a bulk string");
        }
        this.#state = n === 0 ? { kind: "bulkEnd", seen: 0 } : { kind: "bulkBody", buf: Buffer.allocUnsafe(n), filled: 0 };
        if (n === 0) this.#args.push(Buffer.alloc(0));
      }
    }
    this.#offset += chunk.length;
    return out;
  }

  #nextArg(out: Buffer[][]): void {
    if (this.#args.length === this.#want) {
      out.push(this.#args);
      this.#args = [];
      this.#state = { kind: "array" };
    } else {
      this.#state = { kind: "bulkHeader" };
    }
  }

  /** Throws unless the input ended between two commands. */
  end(): void {
    if (this.#state.kind !== "array" || this.#line !== "") throw this.#corrupt("the dump ends in the middle of a command");
  }
}

/** Whether a DUMP payload is intact: its last 8 bytes are the CRC-64 of the rest (after a 2-byte RDB version). */
export function dumpPayloadOk(payload: Buffer): boolean {
  if (payload.length < 10) return false;
  const body = payload.subarray(0, payload.length - 8);
  return new Crc64().update(body).digest().equals(payload.subarray(payload.length - 8));
}

export interface LogicalSummary {
  keys: number;
  /** Keys per database, in the order the dump selects them. */
  databases: Map<number, number>;
  functions: boolean;
}

/**
 * Checks the sequence of commands of a logical dump as they are read: the header first, only the commands dbkeep
 * writes, every DUMP payload's own CRC-64, and the trailer with the right key count last. Used by verify and by a
 * restore before the target is touched.
 */
export class LogicalCheck {
  #started = false;
  #ended = false;
  #db: number | undefined;
  readonly summary: LogicalSummary = { keys: 0, databases: new Map(), functions: false };

  #corrupt(what: string): DbkeepError {
    return new DbkeepError("CORRUPT_BACKUP", `the logical Redis dump is not valid: ${what}`, { hint: "the backup is damaged; restore another one" });
  }

  command(args: Buffer[]): void {
    const name = args[0]!.toString("latin1").toUpperCase();
    if (this.#ended) throw this.#corrupt("commands follow the end marker");
    if (!this.#started) {
      if (name !== "ECHO" || args[1]?.toString("latin1") !== LOGICAL_HEADER) throw this.#corrupt("it does not start with dbkeep's header");
      this.#started = true;
      return;
    }
    if (name === "SELECT" && args.length === 2) {
      const db = Number(args[1]!.toString("latin1"));
      if (!Number.isInteger(db) || db < 0) throw this.#corrupt("SELECT of an invalid database");
      this.#db = db;
      this.summary.databases.set(db, this.summary.databases.get(db) ?? 0);
    } else if (name === "RESTORE" && args.length === 4) {
      if (this.#db === undefined) throw this.#corrupt("RESTORE before any SELECT");
      if (!/^\d+$/.test(args[2]!.toString("latin1"))) throw this.#corrupt("RESTORE with an invalid TTL");
      if (!dumpPayloadOk(args[3]!)) throw this.#corrupt(`the payload of key ${printable(args[1]!)} fails its CRC-64 check`);
      this.summary.keys++;
      this.summary.databases.set(this.#db, (this.summary.databases.get(this.#db) ?? 0) + 1);
    } else if (name === "FUNCTION" && args.length === 3 && args[1]!.toString("latin1").toUpperCase() === "RESTORE") {
      if (!dumpPayloadOk(args[2]!)) throw this.#corrupt("the function libraries' payload fails its CRC-64 check");
      this.summary.functions = true;
    } else if (name === "ECHO" && args.length === 2 && args[1]!.toString("latin1").startsWith(LOGICAL_TRAILER)) {
      const n = Number(args[1]!.toString("latin1").slice(LOGICAL_TRAILER.length));
      if (n !== this.summary.keys) throw this.#corrupt(`the end marker counts ${n} keys, the dump holds ${this.summary.keys}`);
      this.#ended = true;
    } else {
      throw this.#corrupt(`unexpected command ${name.slice(0, 20)}`);
    }
  }

  end(): LogicalSummary {
    if (!this.#started) throw this.#corrupt("it is empty");
    if (!this.#ended) throw this.#corrupt("it has no end marker: it is truncated");
    return this.summary;
  }
}

/** A key for messages: UTF-8 where it is printable, \xNN escapes elsewhere. */
export function printable(key: Buffer, max = 60): string {
  let s = "";
  const text = key.toString("utf8");
  const clean = Buffer.from(text, "utf8").equals(key);
  if (clean) {
    for (const ch of text) s += /[\p{L}\p{N}\p{P}\p{S} ]/u.test(ch) ? ch : `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`;
  } else {
    for (const b of key) s += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`;
  }
  return s.length > max ? `${s.slice(0, max)}...` : s;
}
