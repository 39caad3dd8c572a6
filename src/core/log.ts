import { Writable } from "node:stream";
import pino from "pino";
import { redact } from "./redact.js";

export type Logger = pino.Logger;
export type LogFormat = "text" | "json";

export interface LogSettings {
  format?: LogFormat;
  level?: "debug" | "info" | "warn" | "error" | "silent";
  stream?: NodeJS.WritableStream;
  /** Wraps every write, e.g. to take a terminal's progress line down and put it back around a log line. */
  around?: (write: () => void) => void;
}

const LEVEL_NAMES: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };
const SKIP = new Set(["level", "time", "pid", "hostname", "msg", "v"]);

/**
 * pino everywhere; on a TTY (or with --log-format text) each JSON line is rendered as one readable line.
 * Every line goes through redact(), so a secret that slips into a message is masked before it is written.
 */
export function createLogger(settings: LogSettings = {}): Logger {
  const out = settings.stream ?? process.stderr;
  const format = settings.format ?? ((out as { isTTY?: boolean }).isTTY ? "text" : "json");
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const line = redact(chunk.toString("utf8"));
      const write = () => out.write(format === "json" ? line : renderText(line));
      if (settings.around) settings.around(write);
      else write();
      cb();
    },
  });
  return pino(
    {
      level: settings.level ?? "info",
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: pino.stdSerializers.err },
    },
    dest,
  );
}

function renderText(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const level = LEVEL_NAMES[rec.level as number] ?? "info";
  const time = typeof rec.time === "string" ? rec.time.slice(11, 19) : "";
  const extras = Object.entries(rec)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  const tag = level === "info" ? "" : `${level.toUpperCase()} `;
  return `${time} ${tag}${String(rec.msg ?? "")}${extras ? "  " + extras : ""}\n`;
}
