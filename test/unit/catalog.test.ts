import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { catalogFile, openCatalog } from "../../src/core/catalog.js";
import { listBackups, type Listing } from "../../src/core/listing.js";
import { backupKeys, checksumLine, serializeManifest, type Manifest } from "../../src/core/manifest.js";
import { createLocalStore } from "../../src/stores/local/index.js";
import type { Store } from "../../src/stores/store.js";
import { dbkeep, ROOT, tempDir } from "../helpers/env.js";

const PREFIX = "prod/app/";

/** A backup as dbkeep writes it (data, sidecar, sealed manifest) straight into a local store's directory. */
function writeBackup(dir: string, hour: number, o: { job?: string; database?: string } = {}): Manifest {
  const at = new Date(Date.UTC(2026, 10, 1, hour));
  const keys = backupKeys("prod", o.database ?? "app", at, ".db", "zstd");
  const data = Buffer.from(`backup at hour ${hour}\n`);
  const sha256 = createHash("sha256").update(data).digest("hex");
  const m: Manifest = {
    manifest_version: 1,
    id: keys.id,
    job: o.job ?? "app-backup",
    engine: "sqlite",
    database: o.database ?? "app",
    format: "file",
    compression: "zstd",
    encryption: null,
    key: keys.data,
    checksum_key: keys.checksum,
    raw_bytes: 1000 + hour,
    stored_bytes: data.length,
    sha256,
    started_at: at.toISOString(),
    finished_at: at.toISOString(),
    duration_seconds: 0.1,
    tables: [{ name: "orders", rows: hour }],
    dbkeep_version: "0.1.0",
  };
  mkdirSync(join(dir, "prod", o.database ?? "app"), { recursive: true });
  writeFileSync(join(dir, keys.data), data);
  writeFileSync(join(dir, keys.checksum), checksumLine(sha256, keys.data));
  writeFileSync(join(dir, keys.manifest), serializeManifest(m));
  return m;
}

/** The local store, counting the manifests it is asked for. */
function counted(dir: string): { store: Store; reads: string[] } {
  const inner = createLocalStore({ path: dir }, "local:catalog-test");
  const reads: string[] = [];
  const store: Store = {
    ...inner,
    name: inner.name,
    getBytes: (key, limit) => (reads.push(key), inner.getBytes!(key, limit)),
    get: (key, opts) => (reads.push(key), inner.get(key, opts)),
  };
  return { store, reads: reads };
}

/** A listing as plain data, to compare one made with the catalog against one made without. */
function plain(l: Listing): unknown {
  return JSON.parse(JSON.stringify({ ...l, flaws: [...l.flaws], keys: [...l.keys].sort() }));
}

function setup(n = 5): { dir: string; cat: string; manifests: Manifest[] } {
  const root = tempDir("dbkeep-catalog-");
  const dir = join(root, "store");
  const manifests = Array.from({ length: n }, (_, i) => writeBackup(dir, i));
  return { dir, cat: join(root, "catalog"), manifests };
}

const manifestPath = (dir: string, m: Manifest) => join(dir, m.key.replace(/\.db\.zst$/, ".manifest.json"));

describe("catalog: a cache of manifests, checked against the store's listing", () => {
  it("is written when missing, then spares every read while the store is unchanged, with the same listing", async () => {
    const { dir, cat, manifests } = setup();
    const { store, reads } = counted(dir);
    const fresh = await listBackups(store, PREFIX);
    expect(reads).toHaveLength(5);
    reads.length = 0;

    const first = await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    expect(reads.sort()).toEqual(manifests.map((m) => m.key.replace(/\.db\.zst$/, ".manifest.json")).sort());
    expect(existsSync(catalogFile(store, PREFIX, cat))).toBe(true);
    reads.length = 0;

    const second = await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    expect(reads).toEqual([]);
    expect(plain(first)).toEqual(plain(fresh));
    expect(plain(second)).toEqual(plain(fresh));
    expect(second.backups.map((m) => m.id)).toEqual([...manifests].reverse().map((m) => m.id));
    // Unchanged: not written again.
    const before = statSync(catalogFile(store, PREFIX, cat)).mtimeMs;
    await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    expect(statSync(catalogFile(store, PREFIX, cat)).mtimeMs).toBe(before);
  });

  it("reads a new backup's manifest, and drops a deleted backup: it never appears again", async () => {
    const { dir, cat, manifests } = setup();
    const { store, reads } = counted(dir);
    await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    reads.length = 0;

    const added = writeBackup(dir, 10);
    const gone = manifests[2]!;
    rmSync(manifestPath(dir, gone));
    rmSync(join(dir, gone.key));
    rmSync(join(dir, gone.checksum_key));
    const l = await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    expect(reads).toEqual([added.key.replace(/\.db\.zst$/, ".manifest.json")]);
    expect(l.backups.map((m) => m.id)).toContain(added.id);
    expect(l.backups.map((m) => m.id)).not.toContain(gone.id);
    expect(l.damaged).toEqual([]);
    expect(plain(l)).toEqual(plain(await listBackups(store, PREFIX)));

    // Its entry is gone from the file too: the manifest coming back (a restore of the store) is read again.
    const c = await openCatalog(store, PREFIX, { dir: cat });
    expect(c.stats.loaded).toBe(true);
    writeBackup(dir, 2);
    reads.length = 0;
    await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    expect(reads).toEqual([gone.key.replace(/\.db\.zst$/, ".manifest.json")]);
  });

  it("re-reads a manifest edited behind its back, even with its size and modification time put back", async () => {
    const { dir, cat, manifests } = setup();
    const { store } = counted(dir);
    const m = manifests[3]!;
    const path = manifestPath(dir, m);
    // A whole second, which utimes sets back exactly.
    const t = new Date("2026-11-01T05:00:00Z");
    utimesSync(path, t, t);
    await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    const st = statSync(path);

    // A valid manifest of the same size that says something else (resealed: its checksum matches).
    const edited = serializeManifest({ ...m, raw_bytes: m.raw_bytes + 1 });
    expect(edited.length).toBe(readFileSync(path, "utf8").length);
    writeFileSync(path, edited);
    utimesSync(path, st.atime, st.mtime);
    expect(statSync(path).mtimeMs).toBe(st.mtimeMs);
    let l = await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    expect(l.backups.find((b) => b.id === m.id)?.raw_bytes).toBe(m.raw_bytes + 1);

    // A flipped byte, same size, same time: damaged, not hidden behind the catalog's copy.
    const text = readFileSync(path);
    const at = text.indexOf("raw_bytes") + 2;
    text[at] = text[at]! ^ 0x01;
    writeFileSync(path, text);
    utimesSync(path, st.atime, st.mtime);
    l = await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    expect(l.backups.map((b) => b.id)).not.toContain(m.id);
    expect(l.damaged.map((d) => d.id)).toEqual([m.id]);
    expect(l.damaged[0]!.problems[0]).toMatch(/its manifest is unreadable: .*(checksum|not valid JSON)/);
    expect(plain(l)).toEqual(plain(await listBackups(store, PREFIX)));
  });

  it("keeps the listing's own verdicts: data cut or gone, damage notes, pending markers, leftovers", async () => {
    const { dir, cat, manifests } = setup(6);
    const { store } = counted(dir);
    await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    const [a, b, c, d, e] = manifests as [Manifest, Manifest, Manifest, Manifest, Manifest];
    truncateSync(join(dir, a.key), 3); // data cut
    rmSync(join(dir, b.key)); // data gone
    writeFileSync(join(dir, "prod/app", `${c.id}.damage.json`), JSON.stringify({ found_at: "2026-12-01T00:00:00Z", by: "verify", error: "sha256 mismatch" }) + "\n");
    writeFileSync(join(dir, "prod/app", `${d.id}.pending-abcdef12.json`), JSON.stringify({ id: d.id, purpose: "delete", host: "elsewhere", pid: 1, started_at: "2026-12-01T00:00:00Z", token: "abcdef12" }) + "\n");
    rmSync(manifestPath(dir, e)); // manifest lost: damaged, repairable
    writeFileSync(join(dir, "prod/app", "app-20261101-230000.db.zst.pending-0123456789.json"), "{}"); // a run in progress

    const cached = await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    const fresh = await listBackups(store, PREFIX);
    expect(plain(cached)).toEqual(plain(fresh));
    const damaged = Object.fromEntries(cached.damaged.map((x) => [x.id, x]));
    expect(damaged[a.id]!.problems).toEqual([`${a.key} is 3 bytes, the manifest says ${a.stored_bytes}`]);
    expect(damaged[b.id]!.problems).toEqual([`${b.key} is missing`]);
    expect(damaged[c.id]!.noted).toBe(true);
    expect(damaged[e.id]!.repairable).toBe(true);
    expect(cached.backups.map((m) => m.id)).toContain(d.id);
    expect(cached.leftovers.some((l) => l.id === d.id && l.why === "uncommitted")).toBe(true);
  });

  it("is ignored and written anew when damaged, cut, or another store's", async () => {
    const { dir, cat } = setup();
    const { store, reads } = counted(dir);
    const fresh = plain(await listBackups(store, PREFIX));
    await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    const file = catalogFile(store, PREFIX, cat);
    const good = readFileSync(file);

    const cases: [string, Buffer][] = [
      ["a flipped byte", Buffer.from(good.map((x, i) => (i === Math.floor(good.length / 2) ? x ^ 0x04 : x)))],
      ["cut", good.subarray(0, good.length - 40)],
      ["empty", Buffer.alloc(0)],
      ["not JSON", Buffer.from("garbage\n")],
    ];
    for (const [what, bytes] of cases) {
      writeFileSync(file, bytes);
      expect((await openCatalog(store, PREFIX, { dir: cat })).stats.loaded, what).toBe(false);
      reads.length = 0;
      const l = await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
      expect(reads, what).toHaveLength(5);
      expect(plain(l), what).toEqual(fresh);
      expect((await openCatalog(store, PREFIX, { dir: cat })).stats.loaded, what).toBe(true);
    }

    // Another store's catalog under this one's name (same keys, same sizes): never taken for this store's.
    const other = createLocalStore({ path: dir }, "local:another");
    writeFileSync(catalogFile(other, PREFIX, cat), good);
    expect((await openCatalog(other, PREFIX, { dir: cat })).stats.loaded).toBe(false);
    // --no-catalog: read everything, write it anew.
    reads.length = 0;
    await listBackups(store, PREFIX, { catalog: "rebuild", catalogDir: cat });
    expect(reads).toHaveLength(5);
  });

  it("stays whole when several processes list and write it at once while backups come and go", async () => {
    const { dir, cat, manifests } = setup(40);
    const script = `
      const { createLocalStore } = await import(${JSON.stringify(join(ROOT, "dist/stores/local/index.js"))});
      const { listBackups } = await import(${JSON.stringify(join(ROOT, "dist/core/listing.js"))});
      const store = createLocalStore({ path: ${JSON.stringify(dir)} }, "local:catalog-test");
      for (let i = 0; i < 15; i++) await listBackups(store, ${JSON.stringify(PREFIX)}, { catalog: "use", catalogDir: ${JSON.stringify(cat)} });
    `;
    const run = () =>
      new Promise<number>((resolve, reject) => {
        const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "ignore", "inherit"] });
        child.on("error", reject);
        child.on("close", (code) => resolve(code ?? -1));
      });
    const writers = Promise.all([run(), run(), run(), run()]);
    // Meanwhile: new backups, deleted ones, an edited one.
    for (let i = 0; i < 10; i++) {
      writeBackup(dir, 100 + i);
      const gone = manifests[i]!;
      rmSync(manifestPath(dir, gone));
      rmSync(join(dir, gone.key));
      rmSync(join(dir, gone.checksum_key));
      await new Promise((r) => setTimeout(r, 20));
    }
    const edited = manifests[20]!;
    writeFileSync(manifestPath(dir, edited), serializeManifest({ ...edited, raw_bytes: 424242 }));
    expect(await writers).toEqual([0, 0, 0, 0]);

    const { store } = counted(dir);
    expect((await openCatalog(store, PREFIX, { dir: cat })).stats.loaded).toBe(true);
    expect(readdirSync(cat).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    const l = await listBackups(store, PREFIX, { catalog: "use", catalogDir: cat });
    expect(plain(l)).toEqual(plain(await listBackups(store, PREFIX)));
    expect(l.backups).toHaveLength(40);
    expect(l.backups.find((b) => b.id === edited.id)?.raw_bytes).toBe(424242);
    for (const gone of manifests.slice(0, 10)) expect(l.backups.map((b) => b.id)).not.toContain(gone.id);
  }, 60_000);

  it("is what dbkeep list and prune --dry-run use, kept in the state directory, never in the store", () => {
    const root = tempDir("dbkeep-catalog-cli-");
    const dir = join(root, "store");
    for (let i = 0; i < 4; i++) writeBackup(dir, i);
    const state = join(root, "state");
    const env = { DBKEEP_STATE_DIR: state };
    const first = dbkeep(["list", dir, "--json"], { env });
    expect(first.stderr).not.toContain("error");
    const ids = (JSON.parse(first.stdout) as { backups: Manifest[] }).backups.map((b) => b.id);
    expect(ids).toHaveLength(4);
    expect(readdirSync(join(state, "catalog")).filter((f) => f.endsWith(".json"))).toHaveLength(1);
    // Nothing of the catalog's is in the store.
    const inStore = readdirSync(join(dir, "prod/app"));
    expect(inStore.filter((f) => !/^app-\d{8}-\d{6}\.(db\.zst|db\.zst\.sha256|manifest\.json)$/.test(f))).toEqual([]);

    // One deleted behind the catalog's back: gone from list and from prune's plan.
    rmSync(join(dir, "prod/app", `${ids[0]}.manifest.json`));
    const again = JSON.parse(dbkeep(["list", dir, "--json"], { env }).stdout) as { backups: Manifest[]; damaged: { id: string }[] };
    expect(again.backups.map((b) => b.id)).toEqual(ids.slice(1));
    expect(again.damaged.map((d) => d.id)).toEqual([ids[0]]); // its data is still there: damaged, repairable
    const plan = JSON.parse(dbkeep(["prune", dir, "--keep-last", "1", "--dry-run", "--json"], { env }).stdout) as { backups: { id: string; action: string }[] };
    expect(plan.backups.map((b) => `${b.id}:${b.action}`)).toEqual([`${ids[1]}:keep`, `${ids[2]}:delete`, `${ids[3]}:delete`]);
    const noCatalog = JSON.parse(dbkeep(["list", dir, "--json", "--no-catalog"], { env }).stdout) as { backups: Manifest[] };
    expect(noCatalog.backups).toEqual(again.backups);
  });
});
