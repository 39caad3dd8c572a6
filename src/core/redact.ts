/**
 * Every secret dbkeep resolves is registered here, and every string that leaves the process through a log line,
 * an error message or a notification goes through redact(). Credentials embedded in URLs are masked too.
 *
 * How a registered value is masked depends on its length:
 * - A value of at least MIN_SUBSTRING_SECRET characters is masked wherever it occurs, also inside other text (a
 *   token in a URL path, a key in a header). A value that long does not occur by chance in a message.
 * - A shorter value is masked only where it stands as a value: the whole text, or after `=` or `:` (one space
 *   allowed), or in quotes, and not followed by a letter or digit. A short password such as `wrong` is an ordinary
 *   word as well, and masking it by substring turned "something went wrong" into "something went ***". Tools do not
 *   echo a password in prose; where they show one, it is as `password=...`, `user:...@host` or `'...'`.
 */
const secrets = new Set<string>();
let ordered: string[] | undefined;

/** Registered values at least this long are masked wherever they occur, shorter ones only where they stand as a value. */
export const MIN_SUBSTRING_SECRET = 8;

export function registerSecret(value: string | undefined): void {
  if (!value || secrets.has(value)) return;
  secrets.add(value);
  // As it appears in a URL that a tool or a service echoes (`p%40ss` for `p@ss`).
  const encoded = encodeURIComponent(value);
  if (encoded !== value) secrets.add(encoded);
  ordered = undefined;
}

const isWordChar = (c: string | undefined) => c !== undefined && /[\p{L}\p{N}_]/u.test(c);
const QUOTES = new Set(['"', "'", "`"]);

/** Whether the occurrence of a short secret at [start, end) of `text` stands as a value (see above). */
function standsAsValue(text: string, start: number, end: number): boolean {
  const after = text[end];
  if (isWordChar(after)) return false;
  if (start === 0) return true;
  let before = text[start - 1]!;
  if (before === " " && start >= 2) before = text[start - 2]!;
  if (before === "=" || before === ":") return true;
  return QUOTES.has(before) && after === before;
}

function maskShort(text: string, secret: string): string {
  let out = "";
  let from = 0;
  for (let i = text.indexOf(secret); i !== -1; i = text.indexOf(secret, i + secret.length)) {
    if (!standsAsValue(text, i, i + secret.length)) continue;
    out += text.slice(from, i) + "***";
    from = i + secret.length;
  }
  return from === 0 ? text : out + text.slice(from);
}

/** Whether the character code ends the authority (`user:password@host:port`) of a URL: / ? # quotes, <, > or space. */
function endsAuthority(c: number): boolean {
  return c === 47 || c === 63 || c === 35 || c === 34 || c === 39 || c === 96 || c === 60 || c === 62 || c === 32 || (c >= 9 && c <= 13) || c === 0xa0 || c === 0x2028 || c === 0x2029;
}

const COLON = 58;
const AT = 64;

/**
 * `scheme://user:password@host` -> `scheme://user:***@host`, in one pass over the text that looks at each character
 * about once. The password runs to the last `@` of the authority, so that an unencoded `@` in it does not leave its
 * tail in view. (A regular expression with two unbounded character runs did this before; it backtracked
 * quadratically over long runs of letters and took minutes on a long URL.)
 */
export function maskUrlCredentials(text: string): string {
  let out = "";
  let from = 0;
  let i = text.indexOf("://");
  while (i !== -1) {
    const start = i + 3;
    let end = start;
    let colon = -1;
    let at = -1;
    for (; end < text.length; end++) {
      const c = text.charCodeAt(end);
      if (endsAuthority(c)) break;
      if (c === AT) at = end;
      else if (c === COLON && colon === -1) colon = end;
    }
    // A scheme before `://` (`[a-z][a-z0-9+.-]*`) is required, as in a URL; its last character is enough to tell.
    if (at !== -1 && colon !== -1 && colon < at && i > 0 && /[a-z0-9+.-]/i.test(text[i - 1]!)) {
      out += text.slice(from, colon + 1) + "***";
      from = at;
    }
    i = text.indexOf("://", Math.max(end, start));
  }
  return from === 0 ? text : out + text.slice(from);
}

/** Masks `values` in `text` by the rules above, longest first: a short value inside a longer one must not break its mask. */
export function maskValues(text: string, values: Iterable<string>): string {
  let out = text;
  for (const s of [...values].sort((a, b) => b.length - a.length)) {
    if (!s || !out.includes(s)) continue;
    out = s.length >= MIN_SUBSTRING_SECRET ? out.split(s).join("***") : maskShort(out, s);
  }
  return out;
}

export function redact(text: string): string {
  ordered ??= [...secrets].sort((a, b) => b.length - a.length);
  return maskValues(maskUrlCredentials(text), ordered);
}

/**
 * A URL as it may be shown: scheme, host and port only. Notifier URLs carry their credential in the path (Slack,
 * Discord and Teams webhooks, Telegram's /bot<token>/, an ntfy topic, a healthchecks UUID) or in the query
 * (`?token=`), so both become `***`. Text that is not a URL is masked whole.
 */
export function redactUrlTail(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return "***";
  }
  if (!u.host) return `${u.protocol}***`;
  const tail = (u.pathname !== "" && u.pathname !== "/") || u.search || u.hash ? "/***" : "";
  return `${u.protocol}//${u.host}${tail}`;
}

/** A secret value that never prints itself. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
    registerSecret(value);
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return "***";
  }
  toJSON(): string {
    return "***";
  }
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return "Secret(***)";
  }
}
