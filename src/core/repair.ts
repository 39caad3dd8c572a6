import { COMPRESSION_EXT, COMPRESSIONS, type Compression } from "./compression.js";
import { DbkeepError, toDbkeepError } from "./errors.js";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { clearDamage, DAMAGE_NOTE, DAMAGED_MANIFEST_MARK, type DamagedBackup, type Listing } from "./listing.js";
import type { Logger } from "./log.js";
import { checksumLine, ENCRYPTED_EXT, MANIFEST_VERSION, parseManifest, putText, serializeManifest, type Manifest } from "./manifest.js";
import { streamFromStore } from "./pipeline.js";
import { newMarker, putMarker } from "./reserve.js";
import { HashStage, readAll } from "./streams.js";
import { VERSION } from "./version.js";
import { createAgeDecryptStream, type Identity } from "../crypto/age.js";
import type { Store } from "../stores/store.js";

/**
 * `dbkeep repair`: makes a backup whose manifest was lost or damaged whole again from what it still has, and
 * rewrites sidecars that are missing or cut. Only what can be proven is written: the data must hash to what its
 * sidecar says, must decompress (and decrypt) to its end, and the engine and format come from the job or from a
 * complete backup of the same database beside it whose data has the same kind of name. A partial or differential
 * backup is never repaired into one that would restore as a whole database.
 */

/** What the backups of this database look like, for a manifest made again: from the job, or a complete neighbour. */
export interface RepairTemplate {
  engine: string;
  format: string;
  /** The data's name after the id, before compression: ".sql", ".dump", ".tar", ".db" ... */
  extension: string;
  database: string;
  job?: string;
  source?: Manifest["source"];
}

export interface RepairOutcome {
  id: string;
  action: "repaired" | "sidecar rewritten" | "not repairable";
  detail: string;
}

export interface RepairOptions {
  dryRun: boolean;
  signal: AbortSignal;
  log: Logger;
  /** The job's own template (engine, format, extension, database), when the target is a job. */
  template?: RepairTemplate;
  /** Decrypts encrypted data to check it end to end and count its bytes. */
  identities?: () => Identity[];
  now?: () => Date;
}

function splitDir(key: string): { dir: string; base: string } {
  const i = key.lastIndexOf("/");
  return i < 0 ? { dir: "", base: key } : { dir: key.slice(0, i), base: key.slice(i + 1) };
}

/** `<sha256>  <name>` of a sidecar, or undefined when it is not one. */
function parseSidecar(text: string): { sha256: string; name: string } | undefined {
  const m = /^([0-9a-f]{64}) [ *](.+)\n?$/.exec(text);
  return m ? { sha256: m[1]!, name: m[2]! } : undefined;
}

/** The compression and encryption a data object's name says, and the part of its name before them. */
function nameParts(id: string, base: string): { extension: string; compression: Compression; encrypted: boolean } | undefined {
  let rest = base.slice(id.length);
  const encrypted = rest.endsWith(ENCRYPTED_EXT);
  if (encrypted) rest = rest.slice(0, -ENCRYPTED_EXT.length);
  for (const c of COMPRESSIONS) {
    const ext = COMPRESSION_EXT[c];
    if (c !== "none" && rest.endsWith(ext)) return { extension: rest.slice(0, -ext.length), compression: c, encrypted };
  }
  return { extension: rest, compression: "none", encrypted };
}

function templateFromNeighbours(listing: Listing, d: DamagedBackup, extension: string): RepairTemplate | undefined {
  const m = listing.backups.find((b) => splitDir(b.key).dir === d.dir && nameParts(b.id, splitDir(b.key).base)?.extension === extension);
  return m ? { engine: m.engine, format: m.format, extension, database: m.database, ...(m.job ? { job: m.job } : {}), ...(m.source ? { source: m.source } : {}) } : undefined;
}

/** What the damaged manifest still says of itself, read as text: partial and differential backups must not be rebuilt. */
async function selectiveHints(store: Store, d: DamagedBackup): Promise<string | undefined> {
  const mk = d.objects.find((o) => o.key === d.manifestKey);
  if (!mk) return undefined;
  try {
    const text = (await readAll(await store.get(mk.key), 4 * 1024 * 1024)).toString("utf8");
    if (/"selection"\s*:/.test(text)) return "its damaged manifest says it is a partial backup";
    if (/"differential"\s*:\s*\{[^}]*"kind"\s*:\s*"differential"/.test(text)) return "its damaged manifest says it is a differential";
  } catch {
    // unreadable: nothing to learn from it
  }
  return undefined;
}

export async function repairBackup(store: Store, listing: Listing, d: DamagedBackup, o: RepairOptions): Promise<RepairOutcome> {
  const no = (detail: string): RepairOutcome => ({ id: d.id, action: "not repairable", detail });
  if (d.manifest) return repairChecked(store, d, d.manifest, o);
  const sidecar = d.objects.find((x) => x.key.endsWith(".sha256"));
  if (!sidecar) return no("it has no sidecar, so nothing proves its data intact");
  const parsed = parseSidecar((await readAll(await store.get(sidecar.key), 65536)).toString("utf8"));
  if (!parsed) return no(`its sidecar ${sidecar.key} is not a checksum line`);
  const data = d.objects.find((x) => splitDir(x.key).base === parsed.name && !x.key.endsWith(".sha256"));
  if (!data) return no(`its sidecar names ${parsed.name}, which is not there`);
  const parts = nameParts(d.id, parsed.name);
  if (!parts) return no(`${parsed.name} is not named like a backup of ${d.id}`);
  if (parts.extension.includes(".diff")) return no("it is a differential: its full backup and cutoff cannot be known again");
  const selective = await selectiveHints(store, d);
  if (selective) return no(`${selective}: made again as a whole backup it would restore wrongly`);
  const template = o.template && o.template.extension === parts.extension ? o.template : templateFromNeighbours(listing, d, parts.extension);
  if (!template) {
    return no(`no complete backup beside it with ${parts.extension} data tells which engine made it; run repair with the job's name`);
  }
  if (parts.encrypted && !(o.identities?.() ?? []).length) {
    return no("it is encrypted: repair needs the identity to check it end to end (-i FILE, or the job's encryption.identity_file)");
  }
  // Read it through: its hash must be the sidecar's, and it must decompress (and decrypt) to its end.
  let rawBytes = 0;
  try {
    const { stream, done } = await streamFromStore({
      store,
      key: data.key,
      expected: { sha256: parsed.sha256, bytes: data.size, what: data.key },
      compression: parts.compression,
      ...(parts.encrypted ? { stages: [createAgeDecryptStream(o.identities!(), { what: data.key })] } : {}),
      signal: o.signal,
    });
    for await (const c of stream) rawBytes += (c as Buffer).length;
    await done;
  } catch (err) {
    return no(`its data does not check out: ${toDbkeepError(err).message}`);
  }
  const recipients = parts.encrypted ? await ageRecipientTypes(store, data.key) : [];
  const now = (o.now ?? (() => new Date()))();
  const taken = /(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})(?:-\d+)?$/.exec(d.id);
  const started = taken ? `${taken[1]}-${taken[2]}-${taken[3]}T${taken[4]}:${taken[5]}:${taken[6]}.000Z` : data.modified.toISOString();
  const extras = d.objects
    .filter((x) => x !== data && x !== sidecar && !x.key.endsWith(".verify.json") && !x.key.endsWith(DAMAGE_NOTE) && x.key !== d.manifestKey && !x.key.includes(DAMAGED_MANIFEST_MARK))
    .map((x) => x.key);
  if (extras.length) return no(`it has objects besides its data (${extras.map((k) => splitDir(k).base).join(", ")}) whose checksums are lost`);
  const manifest: Manifest = {
    manifest_version: MANIFEST_VERSION,
    id: d.id,
    ...(template.job ? { job: template.job } : {}),
    engine: template.engine,
    database: template.database,
    ...(template.source ? { source: template.source } : {}),
    format: template.format,
    compression: parts.compression,
    encryption: parts.encrypted ? { format: "age", recipients: recipients.length ? recipients : [{ type: "X25519" }] } : null,
    key: data.key,
    checksum_key: sidecar.key,
    raw_bytes: rawBytes,
    stored_bytes: data.size,
    sha256: parsed.sha256,
    started_at: started,
    finished_at: data.modified.toISOString(),
    duration_seconds: Math.max(0, Math.round((data.modified.getTime() - Date.parse(started)) / 10) / 100),
    repaired: { at: now.toISOString(), reason: d.problems.join("; ") },
    dbkeep_version: VERSION,
  };
  if (o.dryRun) return { id: d.id, action: "repaired", detail: `would make its manifest again: ${template.engine} ${template.format}, ${parts.compression}${parts.encrypted ? "+age" : ""}, sha256 matches its sidecar (dry run)` };
  const marker = await putMarker(store, d.dir, newMarker(d.id, { purpose: "repair", ...(template.job ? { job: template.job } : {}) }), o.signal);
  try {
    const old = d.objects.find((x) => x.key === d.manifestKey);
    if (old) {
      // The damaged manifest is kept beside the new one, for whoever wants to look at what went wrong.
      const body = await readAll(await store.get(old.key), 4 * 1024 * 1024);
      await putText(store, `${d.manifestKey.slice(0, -".manifest.json".length)}${DAMAGED_MANIFEST_MARK}${now.toISOString().replace(/[-:.]/g, "")}.txt`, body.toString("latin1"), o.signal);
    }
    const text = serializeManifest(manifest);
    await putText(store, d.manifestKey, text, o.signal, old ? {} : { ifAbsent: true });
    parseManifest((await readAll(await store.get(d.manifestKey), 4 * 1024 * 1024)).toString("utf8"), d.manifestKey);
  } finally {
    await store.delete([marker]).catch(() => undefined);
  }
  o.log.info({ backup: d.id }, `made the manifest of ${d.id} again from its data and sidecar`);
  return { id: d.id, action: "repaired", detail: `manifest made again: ${template.engine} ${template.format}, ${parts.compression}${parts.encrypted ? "+age" : ""}, ${data.size} bytes whose SHA-256 matches the sidecar` };
}

/**
 * A backup whose manifest is fine and that a restore or verify found damaged (a damage note): its data is read
 * again; if it matches the manifest after all (the sidecar was what disagreed), the sidecar is written again and the
 * note removed. Data that is gone, cut, or still does not match cannot be made whole here.
 */
async function repairChecked(store: Store, d: DamagedBackup, m: Manifest, o: RepairOptions): Promise<RepairOutcome> {
  const no = (detail: string): RepairOutcome => ({ id: d.id, action: "not repairable", detail });
  const sync = "dbkeep sync copies it from a store of the job that holds it intact";
  if (!d.objects.some((x) => x.key.endsWith(DAMAGE_NOTE))) return no(`${d.problems.join("; ")}: ${sync}`);
  try {
    const body = await store.get(m.key, { signal: o.signal });
    const hash = new HashStage({ sha256: m.sha256, bytes: m.stored_bytes, what: m.key });
    await pipeline(body, hash, new Writable({ write: (_c, _e, cb) => cb() }));
  } catch (err) {
    return no(`its data does not match its manifest: ${toDbkeepError(err).message}; ${sync}`);
  }
  const side = await rewriteSidecar(store, m, o);
  if (!o.dryRun) await clearDamage(store, m);
  return { id: d.id, action: "repaired", detail: `its data matches its manifest; sidecar ${side.detail === "its sidecar is right already" ? "was right" : side.detail}${o.dryRun ? " (dry run)" : ""}` };
}

/** The kinds of recipient an age file's header names (an X25519 stanza does not say which key). */
async function ageRecipientTypes(store: Store, key: string): Promise<({ type: "X25519" } | { type: "scrypt" })[]> {
  const body = await store.get(key);
  let head = "";
  for await (const c of body) {
    head += (c as Buffer).toString("latin1");
    if (head.length >= 8192 || head.includes("\n---")) break;
  }
  body.destroy();
  return [...head.matchAll(/^-> (X25519|scrypt) /gm)].map((m) => (m[1] === "scrypt" ? { type: "scrypt" as const } : { type: "X25519" as const }));
}

/** Writes again the sidecar of a complete backup (missing, cut, or not matching its manifest). */
export async function rewriteSidecar(store: Store, m: Manifest, o: Pick<RepairOptions, "dryRun" | "signal" | "log">): Promise<RepairOutcome> {
  const want = checksumLine(m.sha256, m.key);
  let have: string | undefined;
  try {
    have = (await readAll(await store.get(m.checksum_key), 65536)).toString("utf8");
  } catch (err) {
    if (!(err instanceof DbkeepError && err.code === "STORE_NOT_FOUND")) throw err;
  }
  if (have === want) return { id: m.id, action: "sidecar rewritten", detail: "its sidecar is right already" };
  if (!o.dryRun) await putText(store, m.checksum_key, want, o.signal);
  o.log.info({ backup: m.id }, `wrote the sidecar of ${m.id} again`);
  return { id: m.id, action: "sidecar rewritten", detail: `${have === undefined ? "missing" : "did not match the manifest"}: written again from the manifest${o.dryRun ? " (dry run)" : ""}` };
}
