/**
 * One error class for everything a user can act on: a stable code, a one-line message, a hint, the cause kept.
 * The CLI maps codes to exit codes (usage/config -> 2, everything else -> 1) and prints stacks only with --debug.
 */
export type ErrorCode =
  | "USAGE"
  | "CONFIG_INVALID"
  | "SECRET_MISSING"
  | "TOOL_NOT_FOUND"
  | "ENGINE_FAILED"
  | "CONNECTION_FAILED"
  | "STORE_FAILED"
  | "STORE_NOT_FOUND"
  | "ALREADY_EXISTS"
  | "BACKUP_NOT_FOUND"
  | "CHECKSUM_MISMATCH"
  | "CORRUPT_BACKUP"
  | "DECRYPT_FAILED"
  | "NOTIFY_FAILED"
  | "RESTORE_REFUSED"
  | "ABORTED"
  | "TIMEOUT"
  | "HOOK_FAILED"
  | "LOCKED"
  | "NOT_AVAILABLE"
  | "IO_FAILED"
  | "VERIFY_FAILED"
  | "INTERNAL";

export interface DbkeepErrorOptions {
  hint?: string;
  cause?: unknown;
  retryable?: boolean;
  /** Extra lines shown under the message (e.g. the tool's own stderr), already redacted. */
  details?: string;
}

const USAGE_CODES: ReadonlySet<ErrorCode> = new Set(["USAGE", "CONFIG_INVALID", "SECRET_MISSING"]);

export class DbkeepError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly retryable: boolean;
  readonly details: string | undefined;

  constructor(code: ErrorCode, message: string, opts: DbkeepErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "DbkeepError";
    this.code = code;
    this.hint = opts.hint;
    this.retryable = opts.retryable ?? false;
    this.details = opts.details;
  }

  get exitCode(): number {
    return USAGE_CODES.has(this.code) ? 2 : 1;
  }
}

export function isDbkeepError(err: unknown, code?: ErrorCode): err is DbkeepError {
  return err instanceof DbkeepError && (code === undefined || err.code === code);
}

/** Wraps anything thrown into a DbkeepError, keeping DbkeepErrors as they are. */
export function toDbkeepError(err: unknown, fallback: ErrorCode = "INTERNAL"): DbkeepError {
  if (err instanceof DbkeepError) return err;
  if (err instanceof Error && err.name === "AbortError") {
    return new DbkeepError("ABORTED", "operation was cancelled", { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new DbkeepError(fallback, message, { cause: err });
}

/** Formats an error for a terminal: message, optional details, hint. */
export function formatError(err: DbkeepError, job?: string): string {
  const lines = [`error: ${job ? `job ${job}: ` : ""}${err.message}`];
  if (err.details) lines.push(err.details.trimEnd());
  if (err.hint) lines.push(`hint: ${err.hint}`);
  return lines.join("\n");
}
