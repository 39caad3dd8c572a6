import type * as z from "zod";
import { redactUrlTail } from "../core/redact.js";

/** One thing wrong in a config, at its dotted path (`jobs.app.retention.keep_daily`). */
export interface Problem {
  path: string;
  message: string;
}

/** Edit distance with transpositions (optimal string alignment), for "did you mean". */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The candidate `word` was most likely meant to be: a different case, or a typo of one or two letters (one for short
 * words, so that `ssl` is not taken for `tls`). Undefined when nothing is that close.
 */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  let best: { c: string; d: number } | undefined;
  for (const c of candidates) {
    if (c === word) continue;
    const d = c.toLowerCase() === w ? 0 : distance(w, c.toLowerCase());
    const limit = w.length <= 4 ? 1 : 2;
    if (d <= limit && (!best || d < best.d)) best = { c, d };
  }
  return best?.c;
}

/** The parts of zod's internal definition this file walks; zod 4 keeps it on every schema as `_zod.def`. */
interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
  element?: z.ZodType;
  valueType?: z.ZodType;
  options?: z.ZodType[];
  left?: z.ZodType;
  right?: z.ZodType;
  getter?: () => z.ZodType;
}

const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

/** The schemas a value at `path` may have to match (several under a union), wrappers (optional, default...) removed. */
function schemasAt(schema: z.ZodType, path: readonly PropertyKey[]): z.ZodType[] {
  let current: z.ZodType[] = [schema];
  for (const step of [...path, undefined]) {
    const next: z.ZodType[] = [];
    const seen = new Set<z.ZodType>();
    const visit = (s: z.ZodType, depth: number): void => {
      if (seen.has(s) || depth > 20) return;
      seen.add(s);
      const d = defOf(s);
      if (d.innerType) return visit(d.innerType, depth + 1);
      if (d.type === "pipe" && d.in) return visit(d.in, depth + 1);
      if (d.type === "lazy" && d.getter) return visit(d.getter(), depth + 1);
      if (d.options) return d.options.forEach((o) => visit(o, depth + 1));
      if (d.left && d.right) return [d.left, d.right].forEach((o) => visit(o, depth + 1));
      if (step === undefined) return void next.push(s);
      if (d.type === "object" && d.shape && typeof step === "string" && step in d.shape) next.push(d.shape[step]!);
      else if (d.type === "array" && d.element && typeof step === "number") next.push(d.element);
      else if (d.type === "record" && d.valueType) next.push(d.valueType);
    };
    for (const s of current) visit(s, 0);
    current = next;
    if (current.length === 0) break;
  }
  return current;
}

/** The keys an object at `path` may have. */
export function keysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  return [...new Set(schemasAt(schema, path).flatMap((s) => Object.keys(defOf(s).shape ?? {})))];
}

/** The description of the key `key` of the object at `path` (`.describe()` in a schema), if it has one. */
function descriptionOf(schema: z.ZodType, path: readonly PropertyKey[], key: PropertyKey): string | undefined {
  for (const obj of schemasAt(schema, path)) {
    let s: z.ZodType | undefined = defOf(obj).shape?.[String(key)];
    for (let i = 0; s && i < 5; i++) {
      if (s.description) return s.description;
      s = defOf(s).innerType ?? defOf(s).in;
    }
  }
  return undefined;
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let v = raw;
  for (const p of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[p as string];
  }
  return v;
}

const TYPE_WORDS: Record<string, string> = {
  string: "text",
  number: "a number",
  int: "a whole number",
  boolean: "true or false",
  object: "a mapping (key: value lines)",
  record: "a mapping (key: value lines)",
  array: "a list",
  null: "nothing",
  date: "a date",
};

/** A value as a message may show it: never a secret's value, never the path or query of a URL. */
function shown(value: unknown, secret: boolean): string {
  if (value === undefined) return "nothing";
  if (value === null) return "an empty value";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (secret) return typeof value === "string" ? "text" : `a ${typeof value}`;
  if (typeof value === "string") {
    const v = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? redactUrlTail(value) : value;
    return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  }
  return String(value);
}

const literal = (v: unknown) => (typeof v === "string" ? JSON.stringify(v) : String(v));

function oneOfWords(items: string[]): string {
  return items.length <= 1 ? (items[0] ?? "") : `${items.slice(0, -1).join(", ")} or ${items.at(-1)}`;
}

export interface IssueContext {
  /** The schema the value was checked against: for key names and descriptions. */
  schema: z.ZodType;
  /** The value as given. */
  raw: unknown;
  /** Where the value sits in the config (`["datasources", "app"]`). */
  prefix: (string | number)[];
  /** Fields whose values are secrets: never shown. */
  secrets?: readonly string[];
}

/**
 * Zod's issues in the words a person would write: `missing key "path" (the SQLite file)`, `unknown key "databse"
 * (did you mean "database"?)`, "expected a whole number, got "abc"", "must be 0 or more, got -1".
 */
export function describeIssues(issues: readonly z.core.$ZodIssue[], ctx: IssueContext): Problem[] {
  return issues.flatMap((i) => describeIssue(i, ctx));
}

function describeIssue(i: z.core.$ZodIssue, ctx: IssueContext): Problem[] {
  const at = (path: readonly PropertyKey[]) => [...ctx.prefix, ...path.map(String)].join(".");
  const value = valueAt(ctx.raw, i.path);
  const last = i.path.at(-1);
  const secret = typeof last === "string" && (ctx.secrets ?? []).some((f) => last === f);
  const got = () => `, got ${shown(value, secret)}`;
  switch (i.code) {
    case "unrecognized_keys": {
      const known = keysAt(ctx.schema, i.path);
      return i.keys.map((k) => {
        const near = didYouMean(k, known);
        const name = k.length > 40 ? `${k.slice(0, 37)}...` : k;
        return { path: at(i.path), message: `unknown ${i.path.length === 0 && ctx.prefix.length === 0 ? "top-level " : ""}key "${name}"${near ? ` (did you mean "${near}"?)` : ""}` };
      });
    }
    case "invalid_type": {
      if (value === undefined && last !== undefined) {
        const parent = i.path.slice(0, -1);
        const what = descriptionOf(ctx.schema, parent, last);
        return [{ path: at(parent), message: `missing key "${String(last)}"${what ? ` (${what})` : ""}` }];
      }
      return [{ path: at(i.path), message: `expected ${TYPE_WORDS[i.expected] ?? i.expected}${got()}` }];
    }
    case "too_small": {
      const min = Number(i.minimum);
      if (i.origin === "string") return [{ path: at(i.path), message: min <= 1 ? "must not be empty" : `must be at least ${min} characters long` }];
      if (i.origin === "array" || i.origin === "set") return [{ path: at(i.path), message: `must list at least ${min} item${min === 1 ? "" : "s"}` }];
      return [{ path: at(i.path), message: `${i.inclusive === false ? `must be more than ${min}` : `must be ${min} or more`}${got()}` }];
    }
    case "too_big": {
      const max = Number(i.maximum);
      if (i.origin === "string") return [{ path: at(i.path), message: `must be at most ${max} characters long` }];
      if (i.origin === "array" || i.origin === "set") return [{ path: at(i.path), message: `must list at most ${max} item${max === 1 ? "" : "s"}` }];
      return [{ path: at(i.path), message: `${i.inclusive === false ? `must be less than ${max}` : `must be ${max} or less`}${got()}` }];
    }
    case "invalid_value": {
      const near = typeof value === "string" ? didYouMean(value, i.values.filter((v): v is string => typeof v === "string")) : undefined;
      const expected = i.values.length === 1 ? literal(i.values[0]) : `one of ${i.values.map(literal).join(", ")}`;
      return [{ path: at(i.path), message: `expected ${expected}${got()}${near ? ` (did you mean ${literal(near)}?)` : ""}` }];
    }
    case "invalid_union": {
      // A value that got past the first check of one alternative (a mapping where a mapping or `false` is allowed)
      // is reported with that alternative's own problems; otherwise the alternatives are named together.
      const deeper = i.errors.filter((branch) => branch.length > 0 && branch.every((b) => b.path.length > 0 || b.code === "custom" || b.code === "unrecognized_keys"));
      if (deeper.length === 1) return describeIssues(deeper[0]!.map((b) => ({ ...b, path: [...i.path, ...b.path] })), ctx);
      const expected = [
        ...new Set(
          i.errors.flatMap((branch) =>
            branch.flatMap((b) =>
              b.path.length > 0 ? [] : b.code === "invalid_type" ? (b.expected === "boolean" ? ["true", "false"] : [TYPE_WORDS[b.expected] ?? b.expected]) : b.code === "invalid_value" ? b.values.map(literal) : b.code === "invalid_format" ? ["text of the right form"] : [],
            ),
          ),
        ),
      ];
      if (expected.length === 0) return [{ path: at(i.path), message: `is not valid${got()}` }];
      return [{ path: at(i.path), message: `expected ${oneOfWords(expected)}${got()}` }];
    }
    case "invalid_format":
      return [{ path: at(i.path), message: i.message.startsWith("Invalid") ? `has the wrong form${got()}` : i.message }];
    case "invalid_key":
    case "invalid_element":
      return describeIssues(i.issues.map((b) => ({ ...b, path: [...i.path, ...b.path] })), ctx);
    default:
      return [{ path: at(i.path), message: i.message }];
  }
}
