import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkHostKey, fingerprint, hostName, knownKeyTypes, parseKnownHosts, patternsMatch } from "../../src/stores/ssh/known-hosts.js";
import { tempDir } from "../helpers/env.js";
import { keygen } from "../helpers/sshd-server.js";

describe("known_hosts", () => {
  const dir = tempDir();
  const ed = keygen(join(dir, "ed"));
  const ec = keygen(join(dir, "ec"), "ecdsa");
  const rsa = keygen(join(dir, "rsa"), "rsa");
  const other = keygen(join(dir, "other"));
  const blob = (line: string) => Buffer.from(line.split(" ")[1]!, "base64");

  it("computes fingerprints exactly as ssh-keygen -lf prints them, for every key type", () => {
    for (const k of [ed, ec, rsa]) expect(fingerprint(blob(k.publicLine))).toBe(k.fingerprint);
  });

  it("matches plain, [host]:port, wildcard and negated patterns as ssh does", () => {
    expect(hostName("Backup.Example.com", 22)).toBe("backup.example.com");
    expect(hostName("10.0.0.1", 2222)).toBe("[10.0.0.1]:2222");
    expect(patternsMatch("backup.example.com,10.0.0.1", "10.0.0.1")).toBe(true);
    expect(patternsMatch("10.0.0.1", "[10.0.0.1]:2222")).toBe(false);
    expect(patternsMatch("[10.0.0.1]:2222", "[10.0.0.1]:2222")).toBe(true);
    expect(patternsMatch("*.example.com,!secret.example.com", "db.example.com")).toBe(true);
    expect(patternsMatch("*.example.com,!secret.example.com", "secret.example.com")).toBe(false);
    expect(patternsMatch("10.0.0.?", "10.0.0.7")).toBe(true);
    expect(patternsMatch("10.0.0.?", "10.0.0.17")).toBe(false);
  });

  it("reads entries hashed by ssh-keygen -H, for port 22 and another port", () => {
    const file = join(dir, "hashed");
    writeFileSync(file, `db.example.com ${ed.publicLine}\n[db.example.com]:2222 ${ec.publicLine}\n`);
    expect(spawnSync("ssh-keygen", ["-H", "-f", file]).status).toBe(0);
    const lines = parseKnownHosts(readFileSync(file, "utf8"));
    expect(lines.every((l) => l.patterns.startsWith("|1|"))).toBe(true);
    expect(checkHostKey(lines, "db.example.com", 22, blob(ed.publicLine))).toMatchObject({ ok: true });
    expect(checkHostKey(lines, "DB.example.com", 2222, blob(ec.publicLine))).toMatchObject({ ok: true });
    expect(checkHostKey(lines, "db.example.com", 2222, blob(ed.publicLine))).toMatchObject({ ok: false, reason: "unknown" });
    expect(checkHostKey(lines, "other.example.com", 22, blob(ed.publicLine))).toMatchObject({ ok: false, reason: "unknown" });
  });

  it("tells unknown, changed and revoked keys apart, and ignores @cert-authority, damaged and unknown-marker lines", () => {
    const text = [
      "# comment",
      "",
      `db.example.com ${ed.publicLine}`,
      `db.example.com ${rsa.publicLine}`,
      `@cert-authority *.example.com ${other.publicLine}`,
      `@revoked * ${ec.publicLine}`,
      `@future-marker db.example.com ${other.publicLine}`,
      `broken.example.com ssh-ed25519 ${blob(rsa.publicLine).toString("base64")}`,
      "short-line ssh-ed25519",
    ].join("\n");
    const lines = parseKnownHosts(text);
    expect(lines.map((l) => l.line)).toEqual([3, 4, 5, 6]);
    expect(checkHostKey(lines, "db.example.com", 22, blob(ed.publicLine))).toEqual({ ok: true, line: 3 });
    expect(checkHostKey(lines, "db.example.com", 22, blob(rsa.publicLine))).toEqual({ ok: true, line: 4 });
    expect(checkHostKey(lines, "db.example.com", 22, blob(other.publicLine))).toEqual({ ok: false, reason: "changed", line: 3 });
    expect(checkHostKey(lines, "db.example.com", 22, blob(ec.publicLine))).toEqual({ ok: false, reason: "revoked", line: 6 });
    expect(checkHostKey(lines, "x.example.com", 22, blob(other.publicLine))).toEqual({ ok: false, reason: "unknown" });
    expect(checkHostKey(lines, "broken.example.com", 22, blob(rsa.publicLine))).toEqual({ ok: false, reason: "unknown" });
    expect(knownKeyTypes(lines, "db.example.com", 22)).toEqual(["ssh-ed25519", "ssh-rsa"]);
  });
});
