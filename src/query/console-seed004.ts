import { homedir } from "node:os";
import { resolve } from "node:path";
import { DbkeepError } from "../core/errors.js";

/**
 * The console vocabulary of the DB Backup Utility (seed 004), so that its users can type what they know:
 *
 *   full database -path P                          -> backup (a full backup differentials can build on), to P
 *   full tables -tablename A -tablename B -path P  -> backup --table A B, to P
 *   differential backup                            -> backup --differential, where the last full backup went
 *   SQL <statement>                                -> sql <statement>
 *   SQL <statement> -extract -path DIR             -> sql <statement> --csv DIR/<database>_query_<timestamp>.csv
 *
 * Each is parsed into what dbkeep's own commands do; a seed command dbkeep has no equivalent for is a usage error
 * that says what to use instead.
 */

export type SeedBackup = {
  kind: "backup";
  /** What the seed called it, for the console's messages: `full database`, `full tables`, `differential backup`. */
  seed: string;
  tables: string[];
  differential: boolean;
  /** `-path P`, made absolute; absent: the directory of this session's last -path, or the console's store. */
  path?: string;
};

export const SEED_HELP = `Commands of the DB Backup Utility work too:
  full database -path P                          a full backup into directory P (zstd), restorable with dbkeep
                                                 restore P; differential backup builds on it
  full tables -tablename A -tablename B -path P  a partial backup of tables A and B into P
  differential backup                            the rows changed since the last full backup, into the directory of
                                                 this session's last -path (or -path P)
  SQL <statement> [-extract -path DIR]           sql <statement>; -extract writes all rows as CSV into
                                                 DIR/<database>_query_<YYYYMMDD_HHMMSS>.csv (or into DIR if it ends .csv)`;

const FULL_HINT = "full database -path P, or full tables -tablename T [-tablename T ...] -path P (dbkeep: backup, backup --table T)";

function expandPath(p: string): string {
  return p.startsWith("~/") ? resolve(homedir(), p.slice(2)) : resolve(p);
}

/** The words after a seed backup command: `-tablename T` (repeatable, commas allowed) and `-path P`. */
function parseSeedOptions(seed: string, words: string[], allowTables: boolean): { tables: string[]; path?: string } {
  const tables: string[] = [];
  let path: string | undefined;
  // After `-tablename A`, further bare words are tables too (`-tablename users orders`), up to the next option.
  let inTables = false;
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    const flag = w.toLowerCase().replace(/^--?/, "-");
    const value = () => {
      const v = words[++i];
      if (v === undefined || /^-[a-z]/i.test(v)) throw new DbkeepError("USAGE", `${seed}: ${w} needs a value`, { hint: allowTables ? "full tables -tablename users -path /backups" : `${seed} -path /backups` });
      return v;
    };
    if (flag === "-path") {
      path = expandPath(value());
      inTables = false;
    } else if (flag === "-tablename" || flag === "-table") {
      if (!allowTables) throw new DbkeepError("USAGE", `${seed} takes no ${w}`, { hint: "full tables -tablename T -path P backs up some tables" });
      tables.push(...value().split(",").filter(Boolean));
      inTables = true;
    } else if (w.startsWith("-")) {
      throw new DbkeepError("USAGE", `${seed}: unknown option ${w}`, { hint: allowTables ? "full tables -tablename T [-tablename T ...] [-path P]" : `${seed} [-path P]` });
    } else if (inTables) {
      tables.push(...w.split(",").filter(Boolean));
    } else {
      throw new DbkeepError("USAGE", `${seed}: unexpected "${w}"`, { hint: allowTables ? "name each table after -tablename: full tables -tablename users -tablename orders -path P" : `${seed} [-path P]` });
    }
  }
  return { tables, ...(path !== undefined ? { path } : {}) };
}

/**
 * A seed-004 backup command (`full ...`, `differential ...`, `incremental ...`), or undefined when `command` is
 * not one. Throws a usage error, with what to use instead, for the forms dbkeep has no equivalent for.
 */
export function parseSeedBackup(command: string, words: string[]): SeedBackup | undefined {
  const sub = words[0]?.toLowerCase();
  switch (command) {
    case "full": {
      if (sub === "database" || sub === "db") {
        const o = parseSeedOptions("full database", words.slice(1), false);
        return { kind: "backup", seed: "full database", tables: [], differential: false, ...(o.path ? { path: o.path } : {}) };
      }
      if (sub === "tables" || sub === "table") {
        const o = parseSeedOptions("full tables", words.slice(1), true);
        if (o.tables.length === 0) throw new DbkeepError("USAGE", "full tables needs at least one -tablename", { hint: "full tables -tablename users -tablename orders -path /backups" });
        return { kind: "backup", seed: "full tables", tables: o.tables, differential: false, ...(o.path ? { path: o.path } : {}) };
      }
      throw new DbkeepError("USAGE", sub ? `unknown command "full ${words[0]}"` : "full needs what to back up", { hint: FULL_HINT });
    }
    case "differential":
    case "diff": {
      if (sub === "backup") {
        const o = parseSeedOptions("differential backup", words.slice(1), false);
        return { kind: "backup", seed: "differential backup", tables: [], differential: true, ...(o.path ? { path: o.path } : {}) };
      }
      throw new DbkeepError("USAGE", sub ? `unknown command "differential ${words[0]}"` : "differential needs backup", {
        hint: "differential backup (dbkeep: backup --differential): the rows changed since the last full backup",
      });
    }
    case "incremental":
      throw new DbkeepError("USAGE", "incremental backups do not exist, in the DB Backup Utility either", {
        hint: "differential backup keeps the changes since the last full backup; a restic store (--to restic:...) stores only what changed between full backups",
      });
    default:
      return undefined;
  }
}

/**
 * `SQL <statement> -extract -path DIR` (either order of the two options, at the end of the line): the statement and
 * the directory (or .csv file) to extract into. `extract` is absent when the line does not end with -extract.
 */
export function parseSeedExtract(rest: string): { sql: string; extract?: string } | undefined {
  const path = String.raw`("([^"]*)"|'([^']*)'|(\S+))`;
  const a = new RegExp(String.raw`\s-extract\s+-path\s+${path}\s*$`, "i").exec(" " + rest);
  const b = a ? null : new RegExp(String.raw`\s-path\s+${path}\s+-extract\s*$`, "i").exec(" " + rest);
  const m = a ?? b;
  if (m) {
    const p = m[2] ?? m[3] ?? m[4] ?? "";
    return { sql: (" " + rest).slice(0, m.index).trim(), extract: expandPath(p) };
  }
  if (/\s-extract\s*$/i.test(" " + rest)) {
    throw new DbkeepError("USAGE", "-extract needs -path DIR", { hint: "SQL SELECT ... -extract -path /tmp/exports (or sql SELECT ... --csv FILE)" });
  }
  return undefined;
}

/** The CSV file an extraction writes: DIR/<database>_query_<YYYYMMDD_HHMMSS>.csv, or the path itself if it ends in .csv. */
export function extractFile(target: string, database: string, now: Date): string {
  if (/\.csv$/i.test(target)) return target;
  const p = (n: number) => String(n).padStart(2, "0");
  const stamp = `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}_${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
  return resolve(target, `${database.replace(/[^A-Za-z0-9_.-]/g, "_")}_query_${stamp}.csv`);
}

/** How the DB Backup Utility was started: `backup --db postgres --database mydb --storage local --config file|manual ...`. */
export interface SeedStartFlags {
  db?: string;
  database?: string;
  host?: string;
  port?: string;
  user?: string;
  password?: string;
  storage?: string;
  envFile?: string;
}

/** `KEY=value` lines of a .env file; `#` comments, `export `, and one level of quotes are understood. */
export function parseDotEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!;
    const q = /^(["'])(.*)\1$/.exec(v);
    if (q) v = q[2]!;
    else v = v.replace(/\s+#.*$/, "");
    out[m[1]!] = v;
  }
  return out;
}

/**
 * The datasource URL (never with a password) for the seed tool's start flags, and the password, which goes to the
 * engines through PGPASSWORD / MYSQL_PWD. `dotenv`: the variables of the .env file (seed 004's `--config file`):
 * DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME; flags win over them.
 */
export function seedDatasource(f: SeedStartFlags, dotenv: Record<string, string>): { url: string; password?: { value: string; variable: string } } {
  const db = f.db?.toLowerCase();
  const engine = db === "postgres" || db === "postgresql" ? "postgres" : db === "mysql" || db === "mariadb" ? "mysql" : undefined;
  if (!engine) throw new DbkeepError("USAGE", `--db ${f.db ?? ""}: the DB Backup Utility's engines are postgres and mysql`, { hint: "--db postgres or --db mysql, or give a URL: dbkeep console postgres://user@host/db" });
  if (f.storage !== undefined && f.storage.toLowerCase() !== "local") {
    throw new DbkeepError("USAGE", `--storage ${f.storage}: only local storage is known`, { hint: "leave --storage out; -path DIR of each backup command (or --to STORE) says where backups go" });
  }
  const database = f.database ?? dotenv.DB_NAME;
  if (!database) throw new DbkeepError("USAGE", "--db needs --database NAME (or DB_NAME in the .env file)", { hint: "dbkeep console --db postgres --database mydb --host localhost --user postgres" });
  const host = f.host ?? dotenv.DB_HOST ?? "localhost";
  const port = f.port ?? dotenv.DB_PORT;
  if (port !== undefined && !/^\d{1,5}$/.test(port)) throw new DbkeepError("USAGE", `--port must be a port number, not "${port}"`);
  const user = f.user ?? dotenv.DB_USER;
  const hostPart = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  const url = `${engine}://${user ? `${encodeURIComponent(user)}@` : ""}${hostPart}${port ? `:${port}` : ""}/${encodeURIComponent(database)}`;
  const password = f.password ?? dotenv.DB_PASSWORD;
  return { url, ...(password ? { password: { value: password, variable: engine === "postgres" ? "PGPASSWORD" : "MYSQL_PWD" } } : {}) };
}
