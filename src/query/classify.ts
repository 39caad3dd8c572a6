/**
 * Tells statements that only read from statements that change data, schema, settings or the server, before they
 * are sent. The text is scanned as the server would: comments, string literals and quoted identifiers are blanked
 * out first (so `SELECT 'DROP TABLE x'` reads and `/* *\/ DROP` does not hide), then it is split into statements at
 * semicolons.
 *
 * The rule is an allowlist: a statement reads only if it starts with SELECT, WITH, VALUES, TABLE, SHOW, EXPLAIN,
 * DESCRIBE / DESC or a reading PRAGMA, and none of its words is a writing keyword (INSERT, UPDATE, DELETE, MERGE,
 * DROP, CREATE, ... : this catches `WITH x AS (DELETE ...)`, `EXPLAIN ANALYZE DELETE`, `SELECT ... FOR UPDATE`),
 * INTO (`SELECT ... INTO table / OUTFILE`) or a function known to change the database or the server (nextval,
 * pg_terminate_backend, lo_unlink, ...). Anything else (COPY, SET, CALL, DO, BEGIN, an unknown word) is a write.
 *
 * Where the dialect leaves a doubt (backslash escapes in MySQL strings depend on the SQL mode; PostgreSQL's on
 * standard_conforming_strings), the text is scanned under each reading and any reading that finds a write wins.
 * This can refuse an odd harmless query (a column named `delete`); `--allow-write` is the way through. A function
 * of the user's own that writes is not visible here: read-only statements therefore also run in a read-only
 * transaction (or a read-only SQLite connection), where such a write fails.
 */

export type Dialect = "postgres" | "mysql" | "sqlite";

export interface ClassifiedStatement {
  /** The statement as written (comments kept), without the separating semicolon. */
  text: string;
  /** The first keyword, upper case ("SELECT", "DROP", ...); "" if none. */
  verb: string;
  write: boolean;
  /** Why it counts as a write, e.g. "DROP TABLE", "DELETE inside the statement", "SELECT ... INTO". */
  reasons: string[];
}

export interface Classification {
  statements: ClassifiedStatement[];
  /** True if any statement (under any reading of the text) changes something. */
  write: boolean;
  /** Each distinct reason once, for the refusal message. */
  reasons: string[];
  /** More than one statement (under any reading). */
  multiple: boolean;
}

interface Rules {
  /** Backslash escapes quotes in '...' and "..." strings (MySQL by default; PostgreSQL only in E'...'). */
  backslash: "all" | "e-strings" | "none";
  /** $tag$ ... $tag$ strings (PostgreSQL). */
  dollar: boolean;
  /** # starts a comment (MySQL). */
  hash: boolean;
  /** "-- " needs a space after it (MySQL); elsewhere "--" is always a comment. */
  dashSpace: boolean;
  /** Block comments nest (PostgreSQL). */
  nested: boolean;
  /** MySQL executable comments: the text of /*! ... *\/ and /*M! ... *\/ runs. */
  executable: boolean;
  /** [identifier] quoting (SQLite). */
  brackets: boolean;
  /** "..." is a string that takes backslash escapes (MySQL), not an identifier. */
  doubleQuotedString: boolean;
}

const POSTGRES: Rules[] = [
  { backslash: "e-strings", dollar: true, hash: false, dashSpace: false, nested: true, executable: false, brackets: false, doubleQuotedString: false },
  // standard_conforming_strings = off: backslashes escape in every string.
  { backslash: "all", dollar: true, hash: false, dashSpace: false, nested: true, executable: false, brackets: false, doubleQuotedString: false },
];
const MYSQL: Rules[] = [
  { backslash: "all", dollar: false, hash: true, dashSpace: true, nested: false, executable: true, brackets: false, doubleQuotedString: true },
  // sql_mode NO_BACKSLASH_ESCAPES.
  { backslash: "none", dollar: false, hash: true, dashSpace: true, nested: false, executable: true, brackets: false, doubleQuotedString: true },
];
const SQLITE: Rules[] = [{ backslash: "none", dollar: false, hash: false, dashSpace: false, nested: false, executable: false, brackets: true, doubleQuotedString: false }];

const READ_VERBS = new Set(["SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN", "DESCRIBE", "DESC", "PRAGMA"]);

/** Words that make any statement a write wherever they stand (outside literals and comments). */
const WRITE_WORDS = new Set([
  "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "TRUNCATE", "DROP", "ALTER", "CREATE", "GRANT", "REVOKE", "COPY", "CALL", "LOCK",
]);

/** Functions that change the database or the server although they are called from a SELECT. */
const WRITE_FUNCTIONS = new Set([
  "NEXTVAL", "SETVAL", "SET_CONFIG", "PG_TERMINATE_BACKEND", "PG_CANCEL_BACKEND", "PG_RELOAD_CONF", "PG_ROTATE_LOGFILE",
  "PG_SWITCH_WAL", "PG_CREATE_RESTORE_POINT", "PG_PROMOTE", "PG_FILE_WRITE", "PG_FILE_UNLINK", "PG_FILE_RENAME",
  "PG_LOGICAL_EMIT_MESSAGE", "PG_CREATE_LOGICAL_REPLICATION_SLOT", "PG_CREATE_PHYSICAL_REPLICATION_SLOT", "PG_DROP_REPLICATION_SLOT",
  "LO_IMPORT", "LO_EXPORT", "LO_UNLINK", "LO_CREATE", "LO_CREAT", "LO_PUT", "LO_FROM_BYTEA", "DBLINK_EXEC", "DBLINK",
  "LOAD_EXTENSION", "WRITEFILE",
]);

/** PRAGMAs that read even with an argument (table_info(t)); any other PRAGMA with `=` or an argument may write. */
const READ_PRAGMAS = new Set([
  "TABLE_INFO", "TABLE_XINFO", "TABLE_LIST", "INDEX_LIST", "INDEX_INFO", "INDEX_XINFO", "FOREIGN_KEY_LIST", "FOREIGN_KEY_CHECK",
  "DATABASE_LIST", "COLLATION_LIST", "FUNCTION_LIST", "MODULE_LIST", "PRAGMA_LIST", "COMPILE_OPTIONS", "INTEGRITY_CHECK", "QUICK_CHECK",
]);

interface Scanned {
  /** Code with every literal, quoted identifier and comment replaced by a space. */
  code: string;
  /** The original text of the statement. */
  text: string;
}

const isIdent = (ch: string | undefined) => ch !== undefined && /[A-Za-z0-9_$\u0080-\uffff]/.test(ch);

/** Splits `sql` into statements under one set of rules, blanking out what is not code. */
function scan(sql: string, r: Rules): Scanned[] {
  const out: Scanned[] = [];
  let code = "";
  let start = 0;
  let i = 0;
  let inExecutable = false;
  const n = sql.length;
  const endStatement = (end: number) => {
    out.push({ code, text: sql.slice(start, end) });
    code = "";
    start = end + 1;
  };
  /** Skips a quoted run starting at i (the opening quote); returns the index after the closing quote. */
  const skipQuoted = (q: string, backslash: boolean, from: number): number => {
    let j = from + 1;
    while (j < n) {
      const ch = sql[j];
      if (backslash && ch === "\\") {
        j += 2;
        continue;
      }
      if (ch === q) {
        if (sql[j + 1] === q) {
          j += 2;
          continue;
        }
        return j + 1;
      }
      j++;
    }
    return n; // unterminated: the rest is inside the literal
  };
  while (i < n) {
    const ch = sql[i]!;
    const next = sql[i + 1];
    if (ch === "-" && next === "-" && (!r.dashSpace || i + 2 >= n || /\s/.test(sql[i + 2]!))) {
      const eol = sql.indexOf("\n", i);
      i = eol < 0 ? n : eol;
      code += " ";
      continue;
    }
    if (ch === "#" && r.hash) {
      const eol = sql.indexOf("\n", i);
      i = eol < 0 ? n : eol;
      code += " ";
      continue;
    }
    if (ch === "/" && next === "*") {
      if (r.executable && (sql[i + 2] === "!" || (sql[i + 2] === "M" && sql[i + 3] === "!"))) {
        // Executable comment: its text is code. Skip the marker and an optional version number.
        i += sql[i + 2] === "!" ? 3 : 4;
        while (i < n && /\d/.test(sql[i]!)) i++;
        inExecutable = true;
        code += " ";
        continue;
      }
      let depth = 1;
      let j = i + 2;
      while (j < n && depth > 0) {
        if (sql[j] === "*" && sql[j + 1] === "/") {
          depth--;
          j += 2;
        } else if (r.nested && sql[j] === "/" && sql[j + 1] === "*") {
          depth++;
          j += 2;
        } else j++;
      }
      i = j;
      code += " ";
      continue;
    }
    if (inExecutable && ch === "*" && next === "/") {
      inExecutable = false;
      i += 2;
      code += " ";
      continue;
    }
    if (ch === "'") {
      const prev = sql[i - 1];
      const eString = (prev === "E" || prev === "e") && !isIdent(sql[i - 2]);
      const backslash = r.backslash === "all" || (r.backslash === "e-strings" && eString);
      i = skipQuoted("'", backslash, i);
      code += " ' ";
      continue;
    }
    if (ch === '"') {
      i = skipQuoted('"', r.doubleQuotedString && r.backslash !== "none", i);
      code += ' " ';
      continue;
    }
    if (ch === "`") {
      i = skipQuoted("`", false, i);
      code += " ` ";
      continue;
    }
    if (ch === "[" && r.brackets) {
      const close = sql.indexOf("]", i + 1);
      i = close < 0 ? n : close + 1;
      code += " [] ";
      continue;
    }
    if (ch === "$" && r.dollar && !isIdent(sql[i - 1])) {
      const m = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(i, i + 100));
      if (m) {
        const tag = m[0];
        const close = sql.indexOf(tag, i + tag.length);
        i = close < 0 ? n : close + tag.length;
        code += " $$ ";
        continue;
      }
    }
    if (ch === ";") {
      endStatement(i);
      i++;
      continue;
    }
    code += ch;
    i++;
  }
  endStatement(n);
  return out.filter((s) => s.code.trim() !== "");
}

function judge(code: string): { verb: string; reasons: string[] } {
  const words = code.toUpperCase().match(/[A-Z_][A-Z0-9_$]*/g) ?? [];
  const verb = words[0] ?? "";
  const reasons: string[] = [];
  if (!READ_VERBS.has(verb)) {
    const what = [verb, words[1]].filter(Boolean).join(" ");
    reasons.push(what ? `${what} is not a read-only statement` : "not a query");
    return { verb, reasons };
  }
  for (const w of words.slice(1)) {
    if (WRITE_WORDS.has(w)) reasons.push(`${w} inside ${verb}`);
    else if (w === "INTO") reasons.push(`${verb} ... INTO`);
    else if (WRITE_FUNCTIONS.has(w)) reasons.push(`${w.toLowerCase()}() changes the database or the server`);
  }
  if (verb === "PRAGMA") {
    const name = words[1] ?? "";
    const hasArgument = /[=(]/.test(code);
    if (hasArgument && !READ_PRAGMAS.has(name)) reasons.push(`PRAGMA ${name.toLowerCase()} with a value`);
  }
  return { verb, reasons: [...new Set(reasons)] };
}

/** Classifies every statement of `sql`. Without a dialect, the rules of every supported engine apply at once. */
export function classify(sql: string, dialect?: Dialect): Classification {
  const variants = dialect === "postgres" ? POSTGRES : dialect === "mysql" ? MYSQL : dialect === "sqlite" ? SQLITE : [...POSTGRES, ...MYSQL, ...SQLITE];
  let primary: ClassifiedStatement[] | undefined;
  const reasons: string[] = [];
  let multiple = false;
  for (const rules of variants) {
    const statements = scan(sql, rules).map((s): ClassifiedStatement => {
      const j = judge(s.code);
      return { text: s.text.trim(), verb: j.verb, write: j.reasons.length > 0, reasons: j.reasons };
    });
    primary ??= statements;
    if (statements.length > 1) multiple = true;
    for (const s of statements) reasons.push(...s.reasons);
  }
  const unique = [...new Set(reasons)];
  return { statements: primary ?? [], write: unique.length > 0, reasons: unique, multiple };
}

/** The statement's text without a trailing semicolon and surrounding blanks, for sending it on its own. */
export function singleStatement(c: Classification): string | undefined {
  return c.statements.length === 1 ? c.statements[0]!.text : undefined;
}
