import { manifestChecksum } from "../../src/core/manifest.js";

/**
 * A manifest's text with its own checksum made again: what a test writes when it plays a dbkeep that recorded
 * something wrong, or an attacker who rewrote the checksums too (the manifest's checksum is not a secret).
 */
export function resealManifest(text: string | Record<string, unknown>): string {
  const fields = typeof text === "string" ? (JSON.parse(text) as Record<string, unknown>) : text;
  const { checksum: _c, ...rest } = fields;
  return JSON.stringify({ ...rest, checksum: manifestChecksum(rest) }, null, 2) + "\n";
}
