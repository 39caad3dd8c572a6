import type { Progress } from "../core/pipeline.js";
import { formatBytes, formatDuration } from "./format.js";

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
      process.stderr.write(`\r\x1b[K${label}  ${formatBytes(p.read)} ${words.read}, ${formatBytes(p.written)} ${words.written}  ${formatBytes(rate)}/s  ${formatDuration(secs)}`);
      shown = true;
    },
    clear() {
      if (shown) process.stderr.write("\r\x1b[K");
      shown = false;
    },
  };
}
