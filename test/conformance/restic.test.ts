import { spawn, spawnSync } from "node:child_process";
import { readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { isDbkeepError } from "../../src/core/errors.js";
import { Secret } from "../../src/core/redact.js";
import { createResticStore, decodeKeyTag, encodeKeyTag } from "../../src/stores/restic/index.js";
import { resticStoreSchema } from "../../src/stores/restic/plugin.js";
import type { Store } from "../../src/stores/store.js";
import { IN_CI, tempDir } from "../helpers/env.js";
import { resticRepos } from "../helpers/restic-repo.js";
import { storeConformance } from "./store.suite.js";

const PASSWORD = "restic-test-pw-5b1e";
const available = spawnSync("restic", ["version"]).status === 0;
if (!available && IN_CI) throw new Error("restic is not installed under CI (scripts/test-env.sh installs it)");

const made: string[] = [];

function resticStore(repo: string, o: Record<string, unknown> = {}, password = PASSWORD): Store {
  const cache = `${repo}.cache`;
  const opts = resticStoreSchema.parse({ type: "restic", repository: repo, password_env: "UNUSED", init: true, env: { RESTIC_CACHE_DIR: cache }, ...o });
  return createResticStore(opts, { name: "restic:test", repository: repo, password: new Secret(password) });
}

/** `restic <args>` on a test repository, as an independent client. */
function restic(repo: string, args: string[], password = PASSWORD): { code: number; stdout: string; stderr: string } {
  const r = spawnSync("restic", args, {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: password, RESTIC_CACHE_DIR: `${repo}.cache` },
    encoding: "utf8",
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    n += e.isDirectory() ? dirBytes(p) : statSync(p).size;
  }
  return n;
}

async function text(r: Readable): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts).toString();
}

/** The same pseudo-random bytes for the same seed, generated as they are read. */
function pseudoRandom(size: number, seed: number): Readable {
  let x = seed;
  let left = size;
  return new Readable({
    read() {
      if (left === 0) return void this.push(null);
      const n = Math.min(left, 1024 * 1024);
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i += 4) {
        x = (x * 1664525 + 1013904223) >>> 0;
        b.writeUInt32LE(x, i);
      }
      left -= n;
      this.push(b);
    },
  });
}

describe.skipIf(!available)("restic store", () => {
  const root = tempDir("dbkeep-restic-");
  const freshRepo = resticRepos(join(root, "repos"), PASSWORD);
  afterAll(() => {
    // Whatever the suite did (aborted and failed puts included), the repository is sound.
    for (const repo of made) {
      const r = restic(repo, ["check"]);
      expect(r.stderr + r.stdout).toMatch(/no errors were found/);
      expect(r.code).toBe(0);
    }
  });

  // 200 MiB: restic reads stdin at well over 100 MiB/s here, and dump streams as fast.
  storeConformance(
    "restic",
    async () => {
      const repo = freshRepo();
      made.push(repo);
      return resticStore(repo);
    },
    { bigBytes: 200 * 1024 * 1024 },
  );

  it("key tags survive restic's comma splitting and trimming", () => {
    for (const k of ["a/b,c.sql", "x/ lead and trail ", "p%2C/q", "tab\tin/it", "ünï/本 x.db"]) {
      const tag = encodeKeyTag(k);
      expect(tag.split(",")).toHaveLength(1);
      expect(tag).toBe(tag.trim());
      expect(decodeKeyTag(tag)).toBe(k);
    }
    expect(encodeKeyTag("ünï/a b.sql")).toBe("key=ünï/a b.sql");
  });

  it("ifAbsent: a snapshot of the key made while the backup ran wins; the new one is forgotten", async () => {
    const repo = freshRepo();
    made.push(repo);
    const store = resticStore(repo);
    expect(store.atomicCreate).toBe(false);
    await store.put("warm/up.bin", Readable.from([Buffer.from("x")]));
    const slow = new Readable({ read() {} });
    slow.push(Buffer.alloc(256 * 1024, 1));
    const put = store.put("w/k.bin", slow, { ifAbsent: true });
    // The first put has looked the key up (absent) and is writing when the other writer's snapshot lands.
    await new Promise((r) => setTimeout(r, 1500));
    await resticStore(repo).put("w/k.bin", Readable.from([Buffer.from("the winner")]), { ifAbsent: true });
    slow.push(null);
    await expect(put).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
    expect(await text(await store.get("w/k.bin"))).toBe("the winner");
    const snaps = JSON.parse(restic(repo, ["snapshots", "--json", "--tag", encodeKeyTag("w/k.bin")]).stdout) as unknown[];
    expect(snaps).toHaveLength(1);
  });

  describe("specifics", () => {
    let repo: string;
    let store: Store;

    it("deduplicates: a second put of the same 20 MiB body grows the repository by far less than 20 MiB", async () => {
      repo = freshRepo();
      made.push(repo);
      store = resticStore(repo);
      await store.put("dedup/one.db", pseudoRandom(20 * 1024 * 1024, 42));
      const after1 = dirBytes(repo);
      expect(after1).toBeGreaterThan(20 * 1024 * 1024);
      await store.put("dedup/two.db", pseudoRandom(20 * 1024 * 1024, 42));
      const growth = dirBytes(repo) - after1;
      expect(growth).toBeLessThan(1024 * 1024);
      expect((await store.stat("dedup/two.db"))?.size).toBe(20 * 1024 * 1024);
    });

    it("a key put again keeps only the newest snapshot; keys with commas and edge spaces work", async () => {
      const key = "again/a,b .sql ";
      await store.put(key, Readable.from([Buffer.from("first")]));
      await store.put(key, Readable.from([Buffer.from("second!")]));
      expect(await text(await store.get(key))).toBe("second!");
      const snaps = JSON.parse(restic(repo, ["snapshots", "--json", "--tag", "dbkeep"]).stdout) as { tags: string[]; paths: string[]; hostname: string }[];
      const mine = snaps.filter((s) => s.tags.map(decodeKeyTag).includes(key));
      expect(mine).toHaveLength(1);
      expect(mine[0]?.hostname).toBe("dbkeep");
      expect(mine[0]?.paths).toEqual(["/a,b .sql "]);
      expect(await store.stat(key)).toMatchObject({ key, size: 7 });
      // restic's own tools read what dbkeep wrote.
      const snapId = (JSON.parse(restic(repo, ["snapshots", "--json", "--tag", "dbkeep", "--latest", "1"]).stdout) as { id: string; tags: string[] }[]).find((s) =>
        s.tags.map(decodeKeyTag).includes(key),
      )?.id;
      expect(restic(repo, ["dump", snapId ?? "none", "/a,b .sql "]).stdout).toBe("second!");
    });

    it("a stale lock of a killed restic does not block delete", async () => {
      await store.put("lock/k.bin", Readable.from([Buffer.from("x")]));
      // A restic killed mid-backup leaves its lock behind.
      const child = spawn("restic", ["backup", "--stdin", "--stdin-filename", "killed"], {
        env: { PATH: process.env.PATH, HOME: process.env.HOME, RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD, RESTIC_CACHE_DIR: `${repo}.cache` },
        stdio: ["pipe", "ignore", "ignore"],
      });
      child.stdin.write(Buffer.alloc(1024));
      for (let i = 0; i < 100 && readdirSync(join(repo, "locks")).length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      expect(readdirSync(join(repo, "locks"))).toHaveLength(1);
      await store.delete(["lock/k.bin"]);
      expect(await store.stat("lock/k.bin")).toBeUndefined();
      // Whether the dead process's lock file is gone now depends on how restic met it (ignored as stale, or removed
      // by the `restic unlock` after a refusal); what matters is that it blocked nothing, and that a next command
      // still works.
      await store.put("lock/k2.bin", Readable.from([Buffer.from("y")]));
      expect((await store.stat("lock/k2.bin"))?.size).toBe(1);
    });

    it("prune: true reclaims the space of deleted keys, once, when the store is closed", async () => {
      const pruning = resticStore(repo, { prune: true });
      await pruning.put("prune/big.bin", pseudoRandom(8 * 1024 * 1024, 7));
      const before = dirBytes(repo);
      await pruning.delete(["prune/big.bin"]);
      await pruning.close();
      expect(before - dirBytes(repo)).toBeGreaterThan(7 * 1024 * 1024);
    });

    it("reclaim() prunes now (dbkeep forget-prune)", async () => {
      const plain = resticStore(repo);
      await plain.put("reclaim/big.bin", pseudoRandom(8 * 1024 * 1024, 8));
      const before = dirBytes(repo);
      await plain.delete(["reclaim/big.bin"]);
      expect(before - dirBytes(repo)).toBeLessThan(1024 * 1024);
      await plain.reclaim!();
      expect(before - dirBytes(repo)).toBeGreaterThan(7 * 1024 * 1024);
    });

    it("a wrong password is one line that names the fix and not the password", async () => {
      const wrong = resticStore(repo, {}, "not-the-password-9f3");
      const err = await wrong.stat("dedup/one.db").then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isDbkeepError(err)).toBe(true);
      const e = err as Error & { hint?: string; details?: string };
      expect(e.message).toBe(`[store:restic:test] wrong password for restic repository ${repo}`);
      expect(e.details).toBeUndefined();
      expect(e.hint).toBe("check password_env UNUSED");
      expect(`${e.message}${e.hint}`).not.toContain("not-the-password-9f3");
    });

    it("init: true creates a missing repository on the first put (with restic's own key derivation)", async () => {
      const fresh = join(root, "init", "repo");
      made.push(fresh);
      const s = resticStore(fresh, { init: true });
      expect(await s.stat("a/b.sql")).toBeUndefined();
      await s.put("a/b.sql", Readable.from([Buffer.from("hello")]));
      expect(await text(await s.get("a/b.sql"))).toBe("hello");
      expect(restic(fresh, ["cat", "config"]).code).toBe(0);
    });

    it("without init: true, a missing repository is an error with the hint to create it", async () => {
      const missing = join(root, "missing", "repo");
      const s = resticStore(missing, { init: false });
      await expect(s.put("a/b", Readable.from([Buffer.from("x")]))).rejects.toMatchObject({
        message: `[store:restic:test] no restic repository at ${missing}`,
        hint: "set init: true on the store to create it on the first backup, or run `restic init`",
      });
      await expect(s.list("")[Symbol.asyncIterator]().next()).rejects.toMatchObject({ message: `[store:restic:test] no restic repository at ${missing}` });
    });

    it("password_file is handed to restic as RESTIC_PASSWORD_FILE", async () => {
      const file = join(root, "pw.txt");
      writeFileSync(file, `${PASSWORD}\n`, { mode: 0o600 });
      const opts = resticStoreSchema.parse({ type: "restic", repository: repo, password_file: file, env: { RESTIC_CACHE_DIR: `${repo}.cache` } });
      const s = createResticStore(opts, { name: "restic:file", repository: repo });
      let bytes = 0;
      for await (const c of await s.get("dedup/one.db")) bytes += (c as Buffer).length;
      expect(bytes).toBe(20 * 1024 * 1024);
    });
  });
});

describe("restic store options", () => {
  it("rejects reserved tags, commas in tags and a missing password", () => {
    expect(resticStoreSchema.safeParse({ type: "restic", repository: "/r", password_env: "P", tags: ["a,b"] }).success).toBe(false);
    expect(resticStoreSchema.safeParse({ type: "restic", repository: "/r", password_env: "P", tags: ["dbkeep"] }).success).toBe(false);
    expect(resticStoreSchema.safeParse({ type: "restic", repository: "/r" }).success).toBe(false);
    expect(resticStoreSchema.safeParse({ type: "restic", password_env: "P" }).success).toBe(false);
    const ok = resticStoreSchema.parse({ type: "restic", repository_env: "R", password_file: "/p", env: { AWS_SECRET_ACCESS_KEY: { env: "S" } }, tags: ["prod"] });
    expect(ok).toMatchObject({ host: "dbkeep", prune: false, init: false, tags: ["prod"] });
  });
});
