import type { Progress } from "../core/pipeline.js";
import { formatBytes, formatDuration } from "./format.js";

/** The progress line currently on screen, if any, so that log lines can step around it. */
let current: { text: string } | undefined;

/** Writes a log line above the progress line: take it down, write, put it back. */
export function aroundProgress(write: () => void): void {
  if (!current) return write();
  process.stderr.write("\r\x1b[K");
  write();
  process.stderr.write(current.text);
}

/**
 * A single progress line on a TTY (bytes, rate, elapsed), redrawn in place; nothing at all elsewhere, where the
 * structured log lines tell the story instead.
 */
export function createProgressLine(label: string, enabled: boolean, words: { read: string; written: string }): { update: (p: Progress) => void; clear: () => void } {
  if (!enabled) return { update: () => undefined, clear: () => undefined };
  const started = Date.now();
  let shown = false;
  return {
    update(p) {
      const secs = (Date.now() - started) / 1000;
      const rate = secs > 0 ? p.read / secs : 0;
      const text = `${label}  ${formatBytes(p.read)} ${words.read}, ${formatBytes(p.written)} ${words.written}  ${formatBytes(rate)}/s  ${formatDuration(secs)}`;
      process.stderr.write(`\r\x1b[K${text}`);
      current = { text };
      shown = true;
    },
    clear() {
      if (shown) process.stderr.write("\r\x1b[K");
      shown = false;
      current = undefined;
    },
  };
}
