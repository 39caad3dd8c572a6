import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, resolve } from "node:path";
import { createInterface, type Interface } from "node:readline";
import type { Writable } from "node:stream";
import { DbkeepError, formatError, toDbkeepError } from "../core/errors.js";
import { redact } from "../core/redact.js";
import { checkStatement, queryToFile, streamQuery } from "./run.js";
import type { CatalogTable, QueryConnection } from "./connection.js";
import { extractFile, parseSeedBackup, parseSeedExtract, SEED_HELP } from "./console-seed004.js";

/** What the console's backup, list and restore commands do; absent when no store is known (see `unavailable`). */
export interface ConsoleBackupOps {
  /** Where backups go, e.g. `job appdb-nightly (store local)`. */
  describe: string;
  /** `base`: a full backup that later differentials can build on (where the engine has differentials). */
  backup(o: { tables: string[]; differential: boolean; base?: boolean; signal: AbortSignal; say: (line: string) => void }): Promise<void>;
  list(o: { say: (line: string) => void }): Promise<string[]>;
  restore(o: { ref: string; signal: AbortSignal; ask: (question: string) => Promise<boolean>; say: (line: string) => void }): Promise<void>;
}

export interface ConsoleOptions {
  /** Shown in the prompt: `<name>> `. */
  name: string;
  /** Opens the connection; called again after a restore, which needs the database to itself. */
  connect: () => Promise<QueryConnection>;
  input: NodeJS.ReadableStream;
  output: NodeJS.WritableStream;
  /** File of the command history (kept between sessions, mode 0600); none: no history file. */
  historyFile?: string;
  backups?: ConsoleBackupOps;
  /** backup, list and restore on a directory store (seed 004's `-path P`); absent: -path is not accepted. */
  backupsAt?: (dir: string) => ConsoleBackupOps;
  /** Why backup, list and restore are not available, when `backups` is absent. */
  unavailable?: string;
  /** Ends the console (SIGTERM). */
  signal?: AbortSignal;
  /** Rows a `sql` command shows at most. */
  maxRows?: number;
}

export const COMMANDS = ["backup", "list", "restore", "sql", "tables", "help", "exit", "quit", "full", "differential"] as const;

const HELP = `Commands:
  sql <statement>                 run one statement; the first rows are shown as a table
  sql <statement> --csv PATH      write all rows as CSV into PATH (quote a PATH with spaces)
  tables                          list the tables and views (reloads the names Tab completes)
  backup                          a full backup of this database
  backup --table T [T ...]        a partial backup of some tables (--table again, or several names)
  backup --differential           the rows changed since the last full backup
  list                            the backups of this database
  restore [BACKUP]                restore BACKUP (default: the latest) into this database; asks first
  help                            this text
  exit, quit, Ctrl-D              leave
Tab completes commands, table names and column names (table.column too). Statements that may change
data, schema or settings ask for confirmation first. Ctrl-C stops a running command.

${SEED_HELP}`;

const SQL_KEYWORDS = [
  "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET", "JOIN", "LEFT JOIN", "INNER JOIN", "ON", "AS",
  "AND", "OR", "NOT", "NULL", "IS", "IN", "LIKE", "BETWEEN", "DISTINCT", "COUNT", "WITH", "UNION", "VALUES", "INSERT INTO",
  "UPDATE", "DELETE FROM", "SET", "EXPLAIN", "SHOW", "CASE", "WHEN", "THEN", "ELSE", "END", "DESC", "ASC",
];

/** Splits a command line into words; "double" or 'single' quotes keep spaces inside a word. */
export function splitWords(line: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) out.push(m[1] ?? m[2] ?? m[3] ?? "");
  return out;
}

/** `sql <statement> [--csv PATH]`: the statement, and the CSV path if the line ends with --csv PATH. */
export function parseSql(rest: string): { sql: string; csv?: string } {
  const m = /\s--csv\s+("([^"]*)"|'([^']*)'|(\S+))\s*$/.exec(" " + rest);
  if (!m) return { sql: rest.trim() };
  const path = m[2] ?? m[3] ?? m[4] ?? "";
  return { sql: (" " + rest).slice(0, m.index).trim(), csv: path.startsWith("~/") ? resolve(homedir(), path.slice(2)) : resolve(path) };
}

/** `backup [--table T ...] [--tables a,b] [--differential]`. */
export function parseBackup(words: string[]): { tables: string[]; differential: boolean } {
  const tables: string[] = [];
  let differential = false;
  let inTables = false;
  for (const w of words) {
    if (w === "--table" || w === "-t") inTables = true;
    else if (w.startsWith("--tables=") || w.startsWith("--table=")) tables.push(...w.slice(w.indexOf("=") + 1).split(",").filter(Boolean));
    else if (w === "--tables") inTables = true;
    else if (w === "--differential" || w === "--diff") {
      differential = true;
      inTables = false;
    } else if (w.startsWith("-")) throw new DbkeepError("USAGE", `backup: unknown option ${w}`, { hint: "backup, backup --table T [T ...], backup --differential" });
    else if (inTables) tables.push(...w.split(",").filter(Boolean));
    else throw new DbkeepError("USAGE", `backup: unexpected "${w}"`, { hint: "name tables after --table: backup --table orders customers" });
  }
  if (inTables && tables.length === 0) throw new DbkeepError("USAGE", "backup --table needs a table name", { hint: "backup --table orders" });
  return { tables, differential };
}

/** Candidates for Tab: what completes the last word of `line`, and that word. */
export function complete(line: string, catalog: CatalogTable[], backupIds: string[]): [string[], string] {
  const lead = line.replace(/^\s+/, "");
  if (!/\s/.test(lead)) return [COMMANDS.filter((c) => c.startsWith(lead.toLowerCase())).map((c) => c + " "), lead];
  const command = lead.split(/\s+/, 1)[0]!.toLowerCase();
  const word = /[^\s,()=<>]*$/.exec(line)?.[0] ?? "";
  const before = line.slice(0, line.length - word.length);
  const tableNames = catalog.map((t) => t.name);
  const matching = (list: string[]) => [...new Set(list.filter((x) => x.toLowerCase().startsWith(word.toLowerCase())))];
  switch (command) {
    case "help":
      return [matching([...COMMANDS]), word];
    case "restore":
      return [matching(backupIds), word];
    case "full":
      if (/^full\s+\S*$/i.test(lead)) return [matching(["database", "tables"]), word];
      if (word.startsWith("-")) return [matching(/^full\s+tables\b/i.test(lead) ? ["-tablename", "-path"] : ["-path"]), word];
      return [/-tablename\s+$/i.test(before) ? matching(tableNames) : [], word];
    case "differential":
      if (/^differential\s+\S*$/i.test(lead)) return [matching(["backup"]), word];
      return [word.startsWith("-") ? matching(["-path"]) : [], word];
    case "backup":
      if (word.startsWith("-")) return [matching(["--table", "--differential"]), word];
      return [/--table\b|--tables\b|-t\b/.test(before) ? matching(tableNames) : [], word];
    case "sql": {
      if (/(--csv|-path)\s+\S*$/.test(line)) return [[], word];
      const dot = word.lastIndexOf(".");
      const hits: string[] = matching(tableNames);
      // After FROM, JOIN, INTO, UPDATE or TABLE only a table name fits.
      if (/\b(from|join|into|update|table)\s+$/i.test(before)) return [hits, word];
      if (dot > 0) {
        const owner = word.slice(0, dot).toLowerCase();
        const t = catalog.find((x) => x.name.toLowerCase() === owner);
        if (t) hits.push(...matching(t.columns.map((c) => `${word.slice(0, dot)}.${c}`)));
      } else {
        hits.push(...matching(catalog.flatMap((t) => t.columns)));
        const lower = word.length > 0 && word === word.toLowerCase();
        hits.push(...matching(SQL_KEYWORDS).map((k) => (lower ? k.toLowerCase() : k)));
      }
      return [[...new Set(hits)], word];
    }
    default:
      return [[], word];
  }
}

/** `file`, or `file` with _2, _3 ... before .csv when it exists already (two extractions in one second). */
function uniqueFile(file: string): string {
  if (!existsSync(file)) return file;
  for (let n = 2; ; n++) {
    const next = file.replace(/(\.csv)?$/i, (ext) => `_${n}${ext}`);
    if (!existsSync(next)) return next;
  }
}

function loadHistory(file: string | undefined): string[] {
  if (!file) return [];
  try {
    return readFileSync(file, "utf8").split("\n").filter(Boolean).reverse().slice(0, 1000);
  } catch {
    return [];
  }
}

function saveHistory(file: string | undefined, history: string[]): void {
  if (!file) return;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(file, [...history].slice(0, 1000).reverse().join("\n") + "\n", { mode: 0o600 });
    chmodSync(file, 0o600);
  } catch {
    // a history that cannot be written is not worth stopping the console for
  }
}

/**
 * The interactive console: a readline prompt with history and Tab completion over one open connection. Resolves
 * when the user leaves (exit, quit, Ctrl-D) or `signal` ends it.
 */
export async function runConsole(o: ConsoleOptions): Promise<void> {
  const out = o.output;
  const say = (line: string) => void out.write(line + "\n");
  let conn = await o.connect();
  /** The directory of this session's last seed-004 `-path` (list and restore use it when the console has no store). */
  let seedPath: string | undefined;
  /** Where this session's last `full database` went: `differential backup` goes there, to build on it. */
  let lastFull: ConsoleBackupOps | undefined;
  let catalog: CatalogTable[] = [];
  let backupIds: string[] = [];
  const reloadCatalog = async () => {
    try {
      catalog = await conn.catalog();
    } catch {
      // completion without names is still a console
    }
  };
  await reloadCatalog();

  const rl: Interface = createInterface({
    input: o.input,
    output: out,
    terminal: Boolean((o.input as { isTTY?: boolean }).isTTY),
    history: loadHistory(o.historyFile),
    historySize: 1000,
    removeHistoryDuplicates: true,
    completer: (line: string) => complete(line, catalog, backupIds),
  });
  const terminal = Boolean((o.input as { isTTY?: boolean }).isTTY);
  let closed = false;
  let running: AbortController | undefined;
  // Lines are queued: input piped in arrives while a command runs, and each line is one command (or answer).
  const queue: string[] = [];
  let pending: ((v: string | null) => void) | undefined;
  rl.on("line", (line: string) => {
    const p = pending;
    pending = undefined;
    if (p) p(line);
    else queue.push(line);
  });
  rl.on("close", () => {
    closed = true;
    // Ctrl-D on a terminal stops what runs; the end of piped input lets the queued commands finish.
    if (terminal) running?.abort(new DbkeepError("ABORTED", "console closed"));
    const p = pending;
    pending = undefined;
    p?.(null);
  });
  rl.on("SIGINT", () => {
    if (running) {
      say("^C (stopping)");
      running.abort(new DbkeepError("ABORTED", "stopped by Ctrl-C"));
      return;
    }
    // Ctrl-C at the prompt drops the line, as in a shell.
    rl.write(null, { ctrl: true, name: "u" });
    out.write("^C\n");
    rl.prompt();
  });
  rl.on("history", (h: string[]) => saveHistory(o.historyFile, h));
  const stop = () => {
    running?.abort(new DbkeepError("ABORTED", "console stopped"));
    rl.close();
  };
  o.signal?.addEventListener("abort", stop, { once: true });

  const ask = (question: string) =>
    new Promise<string | null>((res) => {
      if (queue.length > 0) {
        const line = queue.shift()!;
        if (!terminal) out.write(`${question}${line}\n`);
        return res(line);
      }
      if (closed) return res(null);
      rl.setPrompt(question);
      rl.prompt();
      pending = res;
    });
  const confirm = async (question: string): Promise<boolean> => {
    const answer = await ask(`${question} [y/N] `);
    // A yes/no answer is not a command worth recalling.
    const h = (rl as unknown as { history: string[] }).history;
    if (answer !== null && h[0] === answer) h.shift();
    return answer !== null && /^y(es)?$/i.test(answer.trim());
  };

  say(`connected to ${conn.label}; ${catalog.length} tables. Type help for commands, exit or Ctrl-D to leave.`);
  if (!o.backups && o.unavailable) say(`backup, list and restore: ${o.unavailable}`);
  try {
    for (;;) {
      const line = await ask(`${o.name}> `);
      if (line === null) break;
      const trimmed = line.trim();
      if (!trimmed) continue;
      const [first = "", ...rest] = splitWords(trimmed);
      const command = first.toLowerCase();
      if (command === "exit" || command === "quit" || command === "\\q") break;
      running = new AbortController();
      try {
        await runCommand(command, trimmed.slice(first.length).trim(), rest, running.signal);
      } catch (err) {
        const e = toDbkeepError(err);
        say(redact(e.code === "ABORTED" ? "stopped" : formatError(e)));
      } finally {
        running = undefined;
      }
      if (closed && terminal) break;
    }
  } finally {
    o.signal?.removeEventListener("abort", stop);
    if (!closed) rl.close();
    say("bye");
    await conn.close();
  }

  async function runCommand(command: string, restText: string, words: string[], signal: AbortSignal): Promise<void> {
    switch (command) {
      case "help":
      case "?":
        say(HELP);
        if (o.backups) say(`Backups: ${o.backups.describe}.`);
        else if (o.unavailable) say(`Backups: ${o.unavailable}.`);
        return;
      case "tables": {
        await reloadCatalog();
        if (catalog.length === 0) say("no tables");
        for (const t of catalog) say(`${t.name} (${t.columns.join(", ")})`);
        return;
      }
      case "sql":
        return sqlCommand(restText, signal);
      case "full":
      case "differential":
      case "diff":
      case "incremental": {
        const b = parseSeedBackup(command, words)!;
        let ops: ConsoleBackupOps | undefined;
        if (b.path) {
          if (!o.backupsAt) throw new DbkeepError("USAGE", "-path is not available in this console", { hint: "backup and backup --table write to the console's store" });
          ops = o.backupsAt(b.path);
          seedPath = b.path;
        } else {
          // As in the seed tool, a differential goes where the full backup it builds on went.
          ops = (b.differential ? lastFull : undefined) ?? o.backups;
        }
        if (!ops) {
          throw new DbkeepError("USAGE", `${b.seed} needs -path DIR: this console has no store`, {
            hint: b.differential ? "give the directory of the full backup: differential backup -path DIR (or open the console with --to DIR)" : `${b.seed} ... -path /backups (or open the console with --to DIR)`,
          });
        }
        if (b.seed === "full database") lastFull = ops;
        await ops.backup({ tables: b.tables, differential: b.differential, base: b.seed === "full database", signal, say });
        return;
      }
      case "backup": {
        const ops = needBackups();
        const b = parseBackup(words);
        await ops.backup({ ...b, signal, say });
        return;
      }
      case "list": {
        backupIds = await needBackups().list({ say });
        return;
      }
      case "restore": {
        const ops = needBackups();
        if (words.length > 1) throw new DbkeepError("USAGE", "restore takes one backup id (or nothing for the latest)");
        // The restore swaps the database: this console's own connection must not hold it.
        await conn.close();
        try {
          await ops.restore({ ref: words[0] ?? "latest", signal, ask: confirm, say });
        } finally {
          conn = await o.connect();
          await reloadCatalog();
        }
        return;
      }
      default:
        if (/^(select|with|insert|update|delete|drop|create|alter|show|explain|truncate|values)$/i.test(command)) {
          throw new DbkeepError("USAGE", `unknown command "${command}"`, { hint: `SQL goes after sql: sql ${command} ...` });
        }
        throw new DbkeepError("USAGE", `unknown command "${command}"`, { hint: "type help for the commands" });
    }
  }

  function needBackups(): ConsoleBackupOps {
    if (o.backups) return o.backups;
    if (seedPath && o.backupsAt) return o.backupsAt(seedPath);
    throw new DbkeepError("USAGE", `no store for backups: ${o.unavailable ?? "none configured"}`, { hint: "open the console with --to STORE, or define a job for this datasource" });
  }

  async function sqlCommand(restText: string, signal: AbortSignal): Promise<void> {
    const seed = parseSeedExtract(restText);
    const { sql, csv } = seed ? { sql: seed.sql, csv: seed.extract ? uniqueFile(extractFile(seed.extract, o.name, new Date())) : undefined } : parseSql(restText);
    // The seed tool created the export directory; so does -extract (not --csv, where a missing directory is a typo).
    if (seed?.extract && csv) mkdirSync(dirname(csv), { recursive: true });
    const { text, classification } = checkStatement(sql, conn.dialect, true);
    if (classification.write) {
      const ok = await confirm(`This statement may change data, schema or the server (${classification.reasons.join("; ")}). Run it?`);
      if (!ok) {
        say("not run");
        return;
      }
    }
    const write = classification.write;
    if (csv) {
      const s = await queryToFile(conn, text, csv, { write, output: { format: "csv" }, signal });
      say(s.kind === "rows" ? `wrote ${s.rows} row${s.rows === 1 ? "" : "s"} to ${csv}` : `${s.command}: ${s.rowCount ?? 0} rows affected`);
    } else {
      const s = await streamQuery(conn, text, { write, output: { format: "table", maxRows: o.maxRows ?? 100 }, out: out as Writable, signal });
      if (s.kind === "done") say(`${s.command}: ${s.rowCount ?? 0} row${s.rowCount === 1 ? "" : "s"} affected`);
      else say(s.truncated ? `(first ${s.rows} rows shown; sql ... --csv PATH writes all of them)` : `(${s.rows} row${s.rows === 1 ? "" : "s"})`);
    }
    if (write) await reloadCatalog();
  }
}
