import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, statSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isDbkeepError, type DbkeepError } from "../../src/core/errors.js";
import { Secret } from "../../src/core/redact.js";
import { createSshStore, type SshStoreDeps, type SshStoreInput } from "../../src/stores/ssh/index.js";
import type { Store, StoreObject } from "../../src/stores/store.js";
import { freePort } from "../helpers/redis.js";
import { keygen, sshdAvailable, startSshd, type TestSshd } from "../helpers/sshd-server.js";
import { storeConformance } from "./store.suite.js";

const available = sshdAvailable();
let sshd: TestSshd | undefined;
let n = 0;

async function server(): Promise<TestSshd> {
  sshd ??= await startSshd({ password: true });
  return sshd;
}

afterAll(async () => {
  await sshd?.stop();
});

/** A store on the test server in a fresh directory (created by the store itself on first put). */
async function storeFor(extra: Partial<SshStoreInput> = {}, deps: SshStoreDeps = {}): Promise<Store> {
  const s = await server();
  return createSshStore(
    { host: s.host, port: s.port, user: s.user, path: join(s.data, `store-${++n}`), key_file: s.userKey.path, known_hosts: s.knownHosts, timeout: 10, ...extra },
    { name: `ssh:test-${n}`, ...deps },
  );
}

async function listAll(store: Store, prefix: string): Promise<StoreObject[]> {
  const out: StoreObject[] = [];
  for await (const o of store.list(prefix)) out.push(o);
  return out;
}

/** The error an operation that must connect fails with. */
async function connectError(store: Store): Promise<DbkeepError> {
  try {
    await store.stat("x");
  } catch (err) {
    if (isDbkeepError(err)) return err;
    throw err;
  } finally {
    await store.close();
  }
  throw new Error("the store connected");
}

if (!available) {
  describe.skip("ssh store (/usr/sbin/sshd not installed)", () => {
    it("needs openssh-server", () => undefined);
  });
} else {
  storeConformance("ssh", () => storeFor());

  describe("ssh store specifics", () => {
    let s: TestSshd;
    beforeAll(async () => {
      s = await server();
    });

    it("ifAbsent publishes with hardlink@openssh.com: atomicCreate, the file stays 0600 and no temporary name is left", async () => {
      const store = await storeFor();
      const dir = join(s.data, `store-${n}`);
      try {
        await store.stat("x");
        expect(store.atomicCreate).toBe(true);
        await store.put("h/k.bin", Readable.from([Buffer.from("first")]), { ifAbsent: true });
        await expect(store.put("h/k.bin", Readable.from([Buffer.from("second")]), { ifAbsent: true })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
        expect(readdirSync(join(dir, "h"))).toEqual(["k.bin"]);
        expect(statSync(join(dir, "h/k.bin")).mode & 0o777).toBe(0o600);
        expect(statSync(join(dir, "h/k.bin")).nlink).toBe(1);
      } finally {
        await store.close();
      }
    });

    it("a server that refuses hardlink@openssh.com: ifAbsent checks and renames, and the store does not claim atomicCreate", async () => {
      const denying = await startSshd({ sftpDenied: ["hardlink"] });
      const store = createSshStore(
        { host: denying.host, port: denying.port, user: denying.user, path: join(denying.data, "store"), key_file: denying.userKey.path, known_hosts: denying.knownHosts, timeout: 10 },
        { name: "ssh:denying" },
      );
      try {
        await store.put("h/k.bin", Readable.from([Buffer.from("first")]), { ifAbsent: true });
        expect(store.atomicCreate).toBe(false);
        await expect(store.put("h/k.bin", Readable.from([Buffer.from("second")]), { ifAbsent: true })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
        expect(readdirSync(join(denying.data, "store/h"))).toEqual(["k.bin"]);
        const back: Buffer[] = [];
        for await (const c of await store.get("h/k.bin")) back.push(c as Buffer);
        expect(Buffer.concat(back).toString()).toBe("first");
      } finally {
        await store.close();
        await denying.stop();
      }
    });

    it("creates files 0600 in 0700 directories, replaces an existing object and rejects keys that escape the path", async () => {
      const store = await storeFor();
      const dir = join(s.data, `store-${n}`);
      try {
        await store.put("a/b/c.sql", Readable.from([Buffer.from("first")]));
        await store.put("a/b/c.sql", Readable.from([Buffer.from("second!")]));
        expect(statSync(join(dir, "a/b/c.sql")).mode & 0o777).toBe(0o600);
        expect(statSync(join(dir, "a")).mode & 0o777).toBe(0o700);
        expect(statSync(join(dir, "a/b")).mode & 0o777).toBe(0o700);
        expect(readdirSync(join(dir, "a/b"))).toEqual(["c.sql"]);
        const back: Buffer[] = [];
        for await (const c of await store.get("a/b/c.sql")) back.push(c as Buffer);
        expect(Buffer.concat(back).toString()).toBe("second!");
        for (const bad of ["../escape", "/abs", "a//b", "a/./b"]) {
          await expect(store.put(bad, Readable.from([Buffer.from("x")]))).rejects.toThrow(/invalid key/);
        }
      } finally {
        await store.close();
      }
    });

    it("refuses an unknown host key with its fingerprint and how to trust it", async () => {
      const empty = join(s.dir, "known_hosts.empty");
      // A plain entry without the port names port 22 only, so it does not vouch for this server.
      writeFileSync(empty, `127.0.0.1 ${s.hostKey.publicLine}\n`);
      const err = await connectError(await storeFor({ known_hosts: empty }));
      expect(err.code).toBe("CONNECTION_FAILED");
      expect(err.message).not.toContain("\n");
      expect(err.message).toContain(s.hostKey.fingerprint);
      expect(err.message).toMatch(/is not in .*known_hosts\.empty: refused/);
      expect(err.hint).toContain(`ssh-keyscan -p ${s.port} 127.0.0.1 >> ${empty}`);
      expect(err.hint).toContain(`host_key: "${s.hostKey.fingerprint}"`);
    });

    it("refuses a changed host key (known_hosts holds another key for [host]:port)", async () => {
      const other = keygen(join(s.dir, `other-${randomBytes(3).toString("hex")}`));
      const file = join(s.dir, "known_hosts.changed");
      writeFileSync(file, `# a comment\n[127.0.0.1]:${s.port} ${other.publicLine}\n`);
      const err = await connectError(await storeFor({ known_hosts: file }));
      expect(err.message).toMatch(/host key of 127\.0\.0\.1:\d+ has CHANGED/);
      expect(err.message).toContain(s.hostKey.fingerprint);
      expect(err.message).toContain("line 2");
      expect(err.hint).toContain(`ssh-keygen -R '[127.0.0.1]:${s.port}'`);
    });

    it("refuses a key marked @revoked even when another line trusts it; @cert-authority lines vouch for nothing", async () => {
      const revoked = join(s.dir, "known_hosts.revoked");
      writeFileSync(revoked, `[127.0.0.1]:${s.port} ${s.hostKey.publicLine}\n@revoked * ${s.hostKey.publicLine}\n`);
      expect((await connectError(await storeFor({ known_hosts: revoked }))).message).toMatch(/marked @revoked/);
      const ca = join(s.dir, "known_hosts.ca");
      writeFileSync(ca, `@cert-authority [127.0.0.1]:${s.port} ${s.hostKey.publicLine}\n`);
      expect((await connectError(await storeFor({ known_hosts: ca }))).message).toMatch(/is not in/);
    });

    it("accepts a hashed known_hosts entry (ssh-keygen -H) and wildcard patterns", async () => {
      const hashed = join(s.dir, "known_hosts.hashed");
      writeFileSync(hashed, `other.example ${keygen(join(s.dir, "k2")).publicLine}\n[127.0.0.1]:${s.port} ${s.hostKey.publicLine}\n`);
      const r = spawnSync("ssh-keygen", ["-H", "-f", hashed], { encoding: "utf8" });
      expect(r.status).toBe(0);
      const text = spawnSync("cat", [hashed], { encoding: "utf8" }).stdout;
      expect(text).not.toContain("127.0.0.1");
      expect(text).toMatch(/^\|1\|/m);
      const store = await storeFor({ known_hosts: hashed });
      await store.put("h.bin", Readable.from([Buffer.from("hashed")]));
      expect((await store.stat("h.bin"))?.size).toBe(6);
      await store.close();

      const wild = join(s.dir, "known_hosts.wild");
      writeFileSync(wild, `[127.0.0.?]:${s.port},!10.*,localhost ${s.hostKey.publicLine}\n`);
      const w = await storeFor({ known_hosts: wild });
      expect(await w.stat("nothing")).toBeUndefined();
      await w.close();
    });

    it("accepts a pinned host_key and refuses a wrong pin", async () => {
      const pinned = await storeFor({ known_hosts: join(s.dir, "does-not-matter"), host_key: s.hostKey.fingerprint });
      expect(await pinned.stat("nothing")).toBeUndefined();
      await pinned.close();
      const wrongPin = keygen(join(s.dir, `pin-${randomBytes(3).toString("hex")}`)).fingerprint;
      const err = await connectError(await storeFor({ host_key: wrongPin }));
      expect(err.message).toContain(`not the pinned host_key ${wrongPin}`);
      expect(err.message).toContain(s.hostKey.fingerprint);
    });

    it("refuses a user key the server does not know, with a clear message", async () => {
      const stranger = keygen(join(s.dir, `stranger-${randomBytes(3).toString("hex")}`));
      const err = await connectError(await storeFor({ key_file: stranger.path }));
      expect(err.code).toBe("CONNECTION_FAILED");
      expect(err.retryable).toBe(false);
      expect(err.message).toMatch(new RegExp(`authentication as ${s.user} on 127\\.0\\.0\\.1:${s.port} failed with key_file ${stranger.path}`));
      expect(err.hint).toContain("authorized_keys");
    });

    it("opens an encrypted key with key_passphrase, and says so when it is missing", async () => {
      const pass = `pp-${randomBytes(8).toString("hex")}`;
      const enc = keygen(join(s.dir, `enc-${randomBytes(3).toString("hex")}`), "ed25519", pass);
      writeFileSync(join(s.dir, "authorized_keys"), `${s.userKey.publicLine}\n${enc.publicLine}\n`);
      const err = await connectError(await storeFor({ key_file: enc.path }));
      expect(err.message).toMatch(/is encrypted and no passphrase was given/);
      expect(err.hint).toMatch(/key_passphrase_env/);
      const wrong = await connectError(await storeFor({ key_file: enc.path }, { keyPassphrase: () => new Secret("not-the-passphrase") }));
      expect(wrong.message).toMatch(/the passphrase does not open it/);
      const store = await storeFor({ key_file: enc.path }, { keyPassphrase: () => new Secret(pass) });
      expect(await store.stat("nothing")).toBeUndefined();
      await store.close();
    });

    // root has no password here (and none can be set for a test), so only a refused password is tested for real.
    it("reports a refused password without showing it", async () => {
      const password = `pw-${randomBytes(8).toString("hex")}`;
      const err = await connectError(await storeFor({ key_file: undefined }, { password: () => new Secret(password) }));
      expect(err.message).toMatch(/authentication as .* failed with password/);
      expect(err.message).toMatch(/the server accepts: .*password/);
      expect(`${err.message} ${err.hint}`).not.toContain(password);
    });

    it("reports a refused connection as retryable with a hint", async () => {
      const port = await freePort();
      const err = await connectError(await storeFor({ port }));
      expect(err.code).toBe("CONNECTION_FAILED");
      expect(err.retryable).toBe(true);
      expect(err.message).toContain(`cannot connect to 127.0.0.1:${port}: connection refused`);
      expect(err.hint).toContain("check that an SSH server listens");
    });

    it("gives up on a server that never greets after `timeout` seconds, as a retryable error", async () => {
      const silent = createServer((sock) => sock.on("error", () => undefined));
      await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
      const port = (silent.address() as AddressInfo).port;
      try {
        const started = Date.now();
        const err = await connectError(await storeFor({ port, timeout: 1 }));
        expect(Date.now() - started).toBeLessThan(8000);
        expect(err.message).toContain(`cannot connect to 127.0.0.1:${port}: no SSH handshake within 1 s`);
        expect(err.retryable).toBe(true);
      } finally {
        silent.close();
      }
    });

    it("a put whose sshd is killed mid-upload rejects (retryable) and leaves nothing under the key after a restart", async () => {
      const store = await storeFor();
      try {
        await store.put("kill/before.bin", Readable.from([Buffer.from("x")]));
        let sent = 0;
        let killed = 0;
        const total = 100 * 1024 * 1024;
        const chunk = Buffer.alloc(256 * 1024, 7);
        const body = new Readable({
          read() {
            if (sent >= total) return void this.push(null);
            sent += chunk.length;
            if (sent >= 8 * 1024 * 1024 && killed === 0) killed = s.killSessions();
            this.push(chunk);
          },
        });
        const err = await store.put("kill/big.bin", body).then(
          () => undefined,
          (e: unknown) => e as DbkeepError,
        );
        expect(killed).toBeGreaterThan(0);
        expect(err).toBeDefined();
        expect(err!.code).toBe("STORE_FAILED");
        expect(err!.retryable).toBe(true);
        expect(err!.message).toMatch(/connection to 127\.0\.0\.1:\d+ lost while uploading kill\/big\.bin after \d+ bytes/);
        expect(sent).toBeLessThan(total);

        await s.restart();
        // The same store opens a new connection.
        expect(await store.stat("kill/big.bin")).toBeUndefined();
        const listed = await listAll(store, "kill/");
        expect(listed.filter((o) => !o.partial).map((o) => o.key)).toEqual(["kill/before.bin"]);
        for (const o of listed.filter((x) => x.partial)) expect(o.key).toMatch(/^kill\/\.big\.bin\.dbkeep-partial-[0-9a-f]+$/);
      } finally {
        await store.close();
      }
    });
  });
}
