/**
 * Every secret dbkeep resolves is registered here, and every string that leaves the process through a log line,
 * an error message or a notification goes through redact(). Credentials embedded in URLs are masked too.
 */
const secrets = new Set<string>();

export function registerSecret(value: string | undefined): void {
  // Very short values would mask ordinary words; they are still never logged on purpose.
  if (value && value.length >= 4) secrets.add(value);
}

const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/?#\s]*)@/gi;

export function redact(text: string): string {
  let out = text.replace(URL_CREDENTIALS, "$1:***@");
  for (const s of secrets) {
    if (out.includes(s)) out = out.split(s).join("***");
  }
  return out;
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
