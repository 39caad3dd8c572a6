import { createHash, createHmac, timingSafeEqual } from "node:crypto";

/**
 * OpenSSH's known_hosts format, read without the ssh binary: plain and `[host]:port` patterns (with `*`, `?` and
 * `!negation`), hashed names (`|1|salt|hmac-sha1`), every key type, and the `@revoked` / `@cert-authority` markers.
 * Host certificates are not used by this client, so `@cert-authority` lines never vouch for a key here.
 */
export interface KnownHostLine {
  line: number;
  marker?: "revoked" | "cert-authority";
  patterns: string;
  keyType: string;
  /** The key in SSH wire format (what the server sends in its key exchange). */
  key: Buffer;
}

export function parseKnownHosts(text: string): KnownHostLine[] {
  const out: KnownHostLine[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === "" || raw.startsWith("#")) continue;
    const fields = raw.split(/\s+/);
    let marker: KnownHostLine["marker"];
    if (fields[0]?.startsWith("@")) {
      const m = fields.shift()!;
      if (m === "@revoked") marker = "revoked";
      else if (m === "@cert-authority") marker = "cert-authority";
      else continue; // an unknown marker: OpenSSH ignores the line, and so do we
    }
    const [patterns, keyType, b64] = fields;
    if (!patterns || !keyType || !b64) continue;
    const key = Buffer.from(b64, "base64");
    // A line whose blob does not name its own type is damaged; skip it rather than guess.
    if (wireKeyType(key) !== keyType) continue;
    out.push({ line: i + 1, ...(marker ? { marker } : {}), patterns, keyType, key });
  }
  return out;
}

/** The key type written at the start of an SSH wire-format public key ("ssh-ed25519", "ssh-rsa", ...). */
export function wireKeyType(key: Buffer): string | undefined {
  if (key.length < 4) return undefined;
  const n = key.readUInt32BE(0);
  if (n === 0 || n > 64 || 4 + n > key.length) return undefined;
  return key.subarray(4, 4 + n).toString("latin1");
}

/** The fingerprint as `ssh-keygen -lf` prints it: SHA256, base64 without padding. */
export function fingerprint(key: Buffer): string {
  return `SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;
}

/** The name known_hosts uses for a host: `host` on port 22, `[host]:port` elsewhere. */
export function hostName(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

function globMatch(pattern: string, text: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`, "i");
  return re.test(text);
}

/** Whether a line's host field names `name` (hashed entries compared with HMAC-SHA1, as ssh does). */
export function patternsMatch(patterns: string, name: string): boolean {
  if (patterns.startsWith("|1|")) {
    const [, , salt, hash] = patterns.split("|");
    if (!salt || !hash) return false;
    const expected = Buffer.from(hash, "base64");
    const actual = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest();
    return expected.length === actual.length && timingSafeEqual(expected, actual);
  }
  let matched = false;
  for (const p of patterns.split(",")) {
    if (p.startsWith("!")) {
      if (globMatch(p.slice(1), name)) return false; // a negated match wins over everything
    } else if (globMatch(p, name)) {
      matched = true;
    }
  }
  return matched;
}

/** Key types that stand for the same key for algorithm negotiation (an RSA key signs with several algorithms). */
export function hostKeyAlgorithms(keyType: string): string[] {
  if (keyType === "ssh-rsa") return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];
  return [keyType];
}

export type HostKeyVerdict =
  | { ok: true; line: number }
  | { ok: false; reason: "unknown" }
  | { ok: false; reason: "changed"; line: number }
  | { ok: false; reason: "revoked"; line: number };

/**
 * The verdict on the key a server presented, as ssh would reach it: a revoked key is refused whatever else the file
 * says; a key listed for the host is accepted; a different key of the same type for the host means the key changed;
 * otherwise the host (or this key type of it) is unknown.
 */
export function checkHostKey(lines: KnownHostLine[], host: string, port: number, key: Buffer): HostKeyVerdict {
  const name = hostName(host, port);
  const type = wireKeyType(key);
  for (const l of lines) {
    if (l.marker === "revoked" && l.key.equals(key)) return { ok: false, reason: "revoked", line: l.line };
  }
  let changed: number | undefined;
  for (const l of lines) {
    if (l.marker || !patternsMatch(l.patterns, name)) continue;
    if (l.key.equals(key)) return { ok: true, line: l.line };
    if (l.keyType === type) changed ??= l.line;
  }
  return changed === undefined ? { ok: false, reason: "unknown" } : { ok: false, reason: "changed", line: changed };
}

/** The key types known_hosts lists for the host, so that the key exchange asks for one of those first (as ssh does). */
export function knownKeyTypes(lines: KnownHostLine[], host: string, port: number): string[] {
  const name = hostName(host, port);
  const types: string[] = [];
  for (const l of lines) {
    if (!l.marker && patternsMatch(l.patterns, name) && !types.includes(l.keyType)) types.push(l.keyType);
  }
  return types;
}
