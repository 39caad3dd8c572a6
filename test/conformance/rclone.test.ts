import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isDbkeepError } from "../../src/core/errors.js";
import { createRcloneStore } from "../../src/stores/rclone/index.js";
import { rcloneStoreSchema } from "../../src/stores/rclone/plugin.js";
import type { Store, StoreObject } from "../../src/stores/store.js";
import { tempDir } from "../helpers/env.js";
import { LOCAL_REMOTE_ENV, rcloneAvailable, sshdAvailable, startSftp, type TestSftp } from "../helpers/rclone-remotes.js";
import { storeConformance } from "./store.suite.js";

const available = rcloneAvailable();
const sftpAvailable = available && sshdAvailable();

function rcloneStore(o: Record<string, unknown>): Store {
  return createRcloneStore(rcloneStoreSchema.parse({ type: "rclone", ...o }), { name: "rclone:test" });
}

async function text(r: Readable): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts).toString();
}

async function listAll(store: Store, prefix: string): Promise<StoreObject[]> {
  const out: StoreObject[] = [];
  for await (const o of store.list(prefix)) out.push(o);
  return out;
}

describe.skipIf(!available)("rclone store, local remote", () => {
  const root = tempDir("dbkeep-rclone-");
  let n = 0;
  const localStore = () => {
    const dir = join(root, `store-${++n}`);
    return { dir, store: rcloneStore({ remote: `loc:${dir}`, env: LOCAL_REMOTE_ENV }) };
  };

  storeConformance("rclone (local remote)", async () => localStore().store);

  it("ifAbsent: a key another writer created while the upload ran is not replaced; the temporary object goes", async () => {
    const { dir, store } = localStore();
    expect(store.atomicCreate).toBe(false);
    const slow = new Readable({ read() {} });
    // Past rcat's streaming cutoff (100 KiB), so that it writes the temporary object as data comes.
    slow.push(Buffer.alloc(256 * 1024, 1));
    const put = store.put("w/k.bin", slow, { ifAbsent: true });
    // The upload is under way (its temporary object exists) when the other writer publishes the key.
    for (let i = 0; i < 200 && !(existsSync(join(dir, "w")) && readdirSync(join(dir, "w")).length > 0); i++) await new Promise((r) => setTimeout(r, 20));
    expect(readdirSync(join(dir, "w"))).toEqual([expect.stringMatching(/^\.k\.bin\.dbkeep-partial-/)]);
    await store.put("w/k.bin", Readable.from([Buffer.from("the winner")]), { ifAbsent: true });
    slow.push(null);
    await expect(put).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
    expect(readFileSync(join(dir, "w", "k.bin"), "utf8")).toBe("the winner");
    expect(readdirSync(join(dir, "w"))).toEqual(["k.bin"]);
  });

  it("an interrupted upload leaves only a partial object, never the final key, and list flags it", async () => {
    const { dir, store } = localStore();
    await store.put("p/k.bin", Readable.from([Buffer.from("old")]));
    // What a killed dbkeep leaves behind: the temporary name of an upload in progress.
    writeFileSync(join(dir, "p", ".k.bin.dbkeep-partial-0123456789ab"), "half");
    const listed = await listAll(store, "p/");
    expect(listed.map((o) => [o.key, o.partial ?? false]).sort()).toEqual([
      ["p/.k.bin.dbkeep-partial-0123456789ab", true],
      ["p/k.bin", false],
    ]);
    // A put whose source fails removes its temporary object.
    const failing = new Readable({ read() {} });
    failing.push(Buffer.alloc(64 * 1024, 2));
    setTimeout(() => failing.destroy(new Error("dump failed")), 20);
    await expect(store.put("p/k.bin", failing)).rejects.toThrow("dump failed");
    expect(readdirSync(join(dir, "p")).sort()).toEqual([".k.bin.dbkeep-partial-0123456789ab", "k.bin"]);
    expect(readFileSync(join(dir, "p", "k.bin"), "utf8")).toBe("old");
    await store.delete(["p/.k.bin.dbkeep-partial-0123456789ab"]);
    expect(readdirSync(join(dir, "p"))).toEqual(["k.bin"]);
  });

  it("a remote at the root of its backend (`name:`) keeps keys relative", async () => {
    const dir = join(root, "rooted");
    mkdirSync(dir);
    // The `alias` backend turns `al:` into a remote whose root is the directory.
    const store = rcloneStore({ remote: "al:", env: { ...LOCAL_REMOTE_ENV, RCLONE_CONFIG_AL_TYPE: "alias", RCLONE_CONFIG_AL_REMOTE: `loc:${dir}` } });
    await store.put("a/b.sql", Readable.from([Buffer.from("x")]));
    expect(existsSync(join(dir, "a", "b.sql"))).toBe(true);
    expect((await listAll(store, "")).map((o) => o.key)).toEqual(["a/b.sql"]);
  });

  it("an unknown remote is one line with a hint how to define it", async () => {
    const store = rcloneStore({ remote: "nosuch:backups" });
    const err = await store.stat("a/b").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isDbkeepError(err, "STORE_FAILED")).toBe(true);
    expect((err as Error).message).toMatch(/^\[store:rclone:test\] rclone lsjson --stat a\/b failed \(exit code \d\): .*didn't find section in config file/);
    expect((err as { hint?: string }).hint).toContain("RCLONE_CONFIG_NOSUCH_TYPE");
  });

  it("secrets from env: references reach rclone's environment, and flags refuse credentials", async () => {
    process.env.DBKEEP_TEST_RCLONE_TYPE = "local";
    const dir = join(root, "envref");
    const store = rcloneStore({ remote: `ref:${dir}`, env: { RCLONE_CONFIG_REF_TYPE: { env: "DBKEEP_TEST_RCLONE_TYPE" } }, flags: ["--transfers=2"] });
    await store.put("x.txt", Readable.from([Buffer.from("hi")]));
    expect(await text(await store.get("x.txt"))).toBe("hi");
    for (const bad of ["--sftp-pass=abc", "--s3-secret-access-key=abc", "-v", "--header=Authorization: x", "--config=/x"]) {
      expect(rcloneStoreSchema.safeParse({ type: "rclone", remote: "x:y", flags: [bad] }).success, bad).toBe(false);
    }
    expect(rcloneStoreSchema.safeParse({ type: "rclone", remote: ":sftp,host=h,pass=secret:path" }).success).toBe(false);
    expect(rcloneStoreSchema.safeParse({ type: "rclone", remote: "no-colon" }).success).toBe(false);
    expect(rcloneStoreSchema.safeParse({ type: "rclone", remote: "x:y", flags: ["--sftp-key-file=/k", "--fast-list", "--s3-chunk-size=16M"] }).success).toBe(true);
  });
});

describe.skipIf(!sftpAvailable)("rclone store, sftp remote against OpenSSH", () => {
  let sftp: TestSftp;
  beforeAll(async () => {
    sftp = await startSftp();
  });
  afterAll(async () => {
    await sftp?.stop();
  });
  let n = 0;
  const sftpStore = () => rcloneStore({ remote: `sft:${sftp.dir}/store-${++n}`, env: sftp.env });

  // 32 MiB: enough to cross every buffer; the sftp round trips make larger bodies slow on a loaded machine.
  storeConformance("rclone (sftp remote)", async () => sftpStore(), { bigBytes: 32 * 1024 * 1024 });

  it("a key put twice within a second with the same size holds the second body", async () => {
    const store = sftpStore();
    await store.put("same/k.bin", Readable.from([Buffer.from("AAAA")]));
    await store.put("same/k.bin", Readable.from([Buffer.from("BBBB")]));
    expect(await text(await store.get("same/k.bin"))).toBe("BBBB");
    expect((await listAll(store, "same/")).map((o) => o.key)).toEqual(["same/k.bin"]);
  });

  it("an unknown host key is refused", async () => {
    const other = join(sftp.dir, "..", "other_known_hosts");
    writeFileSync(other, `[127.0.0.1]:${sftp.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnIC8ZkDKqv8tk6rHl3m1pV1Xr9JQ7o+P2QfF3uO8w7\n`);
    const store = rcloneStore({ remote: `sft:${sftp.dir}/x`, env: { ...sftp.env, RCLONE_CONFIG_SFT_KNOWN_HOSTS_FILE: other }, flags: ["--retries=1", "--low-level-retries=1"] });
    await expect(store.stat("k")).rejects.toThrow(/key mismatch|knownhosts|host key/i);
  });
});
