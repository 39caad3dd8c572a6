import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { makeTempDir } from "../../core/tempdir.js";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { DbkeepError, type ErrorCode } from "../../core/errors.js";
import { redact, type Secret } from "../../core/redact.js";
import { endAfter } from "../../core/streams.js";
import { feedWhileReading, minimalEnv, resolveTool, spawnTool } from "../../core/subprocess.js";
import { startDump } from "../dump.js";
import type { Dump, DumpOptions, Engine, RestoreOptions, TargetState } from "../engine.js";
import type { Db2Datasource } from "./schema.js";

export type Db2EngineOptions = Omit<Db2Datasource, "engine" | "password" | "password_env" | "password_file" | "compression" | "compression_level"> & {
  /** Resolved on first use, so that listing backups does not need the password. */
  password?: () => Secret | undefined;
};

/** The image files of BACKUP DATABASE, carried as a tar; an online image needs a rollforward after its restore. */
const FORMATS = ["image", "image-online"];

/** DB.0.inst.DBPART000.20260101120000.001 (Db2 11.5), DB.0.inst.NODE0000.CATN0000.20260101120000.001 (older). */
const IMAGE = /^([A-Za-z][A-Za-z0-9@#$_]*)\.\d+\.[^.]+\.(?:DBPART\d+|NODE\d+\.CATN\d+)\.(\d{14})\.\d{3}$/;

interface Session {
  dir: string;
  close(): Promise<void>;
}

export function createDb2Engine(opts: Db2EngineOptions): Engine {
  const binDir = opts.bin_dir;
  const db = opts.database.toUpperCase();
  const format = opts.online ? "image-online" : "image";
  const timeoutMs = opts.timeout ? opts.timeout * 1000 : undefined;
  const where = `instance ${opts.instance ?? "(from the environment)"}, database ${db}`;
  const env = () => minimalEnv(opts.instance ? { DB2INSTANCE: opts.instance } : {});
  let commands = 0;

  /** `USER u USING pw` of BACKUP / RESTORE / ROLLFORWARD; the CLP has no way to read a password from elsewhere. */
  function credentials(): string {
    if (!opts.user) return "";
    const pw = opts.password?.();
    if (pw && /[\s;"']/.test(pw.reveal())) {
      throw new DbkeepError("CONFIG_INVALID", "the Db2 password holds a space, quote or semicolon, which a CLP command file cannot carry", {
        hint: "use a password without them for the backup user",
      });
    }
    return ` USER ${opts.user}${pw ? ` USING ${pw.reveal()}` : ""}`;
  }

  async function withSession<T>(fn: (s: Session) => Promise<T>): Promise<T> {
    const dir = await makeTempDir("db2");
    try {
      return await fn({ dir, close: () => rm(dir, { recursive: true, force: true }) });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Runs statements through the CLP from a 0600 command file, removed right after: `db2 CONNECT ... USING pw`
   * would put the password in the process list. No -v: the CLP would echo the statements, password included.
   */
  async function clp(s: Session, statements: string[], signal: AbortSignal | undefined, context: string): Promise<string> {
    const db2 = await resolveTool("db2", binDir);
    const file = join(s.dir, `commands-${++commands}.clp`);
    await writeFile(file, statements.map((x) => `${x};`).join("\n") + "\n", { mode: 0o600, flag: "wx" });
    try {
      const t = spawnTool(db2, ["-stf", file], { env: env(), timeoutMs, context, stdio: ["ignore", "pipe", "pipe"], ...(signal ? { signal } : {}) });
      let out = "";
      t.child.stdout?.setEncoding("utf8");
      t.child.stdout?.on("data", (c: string) => (out = (out + c).slice(-64 * 1024)));
      try {
        await t.done;
      } catch (err) {
        // 1: no rows, 2: a warning (SQLxxxxW); 4 and 8 are errors. The CLP prints its messages on stdout.
        if (t.child.exitCode === 1 || t.child.exitCode === 2) return out;
        if (!(err instanceof DbkeepError) || err.code === "TIMEOUT" || err.code === "ABORTED") throw err;
        const text = `${out}\n${err.details ?? ""}`;
        const explained = explainDb2Error(text);
        throw new DbkeepError(explained?.code ?? "ENGINE_FAILED", err.message, {
          details: redact(text.trim().split("\n").filter((l) => l.trim()).slice(-6).join("\n")),
          hint: explained?.hint,
          retryable: explained?.retryable ?? false,
          cause: err,
        });
      }
      return out;
    } finally {
      await rm(file, { force: true });
    }
  }

  /** Runs db2ckbkp on every image: an image Db2 itself would refuse must fail now, not on the day of the restore. */
  async function checkImages(dir: string, images: string[], code: ErrorCode, signal: AbortSignal): Promise<void> {
    const ckbkp = await resolveTool("db2ckbkp", binDir);
    for (const image of images) {
      const t = spawnTool(ckbkp, [join(dir, image)], { env: env(), signal, timeoutMs, errorCode: code, context: `checking ${image}`, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      t.child.stdout?.setEncoding("utf8");
      t.child.stdout?.on("data", (c: string) => (out = (out + c).slice(-16 * 1024)));
      try {
        await t.done;
      } catch (err) {
        throw new DbkeepError(code, `db2ckbkp found the backup image ${image} damaged`, {
          details: out.trim().split("\n").slice(-6).join("\n") || (err as DbkeepError).details,
          hint: code === "CORRUPT_BACKUP" ? "restore another backup" : "check the staging disk and run the backup again",
          cause: err,
        });
      }
      if (/ERRORS DETECTED/i.test(out)) {
        throw new DbkeepError(code, `db2ckbkp found the backup image ${image} damaged`, { details: out.trim().split("\n").slice(-6).join("\n") });
      }
    }
  }

  async function imagesIn(dir: string): Promise<{ name: string; db: string; taken: string }[]> {
    const found = [];
    for (const name of (await readdir(dir)).sort()) {
      const m = IMAGE.exec(name);
      if (m) found.push({ name, db: (m[1] ?? "").toUpperCase(), taken: m[2] ?? "" });
    }
    return found;
  }

  function safePath(path: string): string {
    if (/[\s;"']/.test(path)) {
      throw new DbkeepError("CONFIG_INVALID", `the path ${path} holds a space, quote or semicolon, which a CLP command cannot carry`, { hint: "set staging_dir (or TMPDIR) to a plain path" });
    }
    return path;
  }

  function dump(dopts: DumpOptions): Dump {
    return startDump(async (out) => {
      await resolveTool("db2", binDir);
      await withSession(async (s) => {
        const staging = opts.staging_dir ? await mkdtemp(join(opts.staging_dir, "dbkeep-db2-")) : join(s.dir, "image");
        if (!opts.staging_dir) await mkdir(staging, { mode: 0o700 });
        try {
          await clp(s, [`BACKUP DATABASE ${db}${credentials()}${opts.online ? " ONLINE" : ""} TO ${safePath(staging)}${opts.online ? " INCLUDE LOGS" : ""} WITHOUT PROMPTING`], dopts.signal, where);
          const images = (await imagesIn(staging)).filter((i) => i.db === db);
          if (images.length === 0) throw new DbkeepError("ENGINE_FAILED", `BACKUP DATABASE ${db} succeeded but left no backup image in ${staging}`);
          const taken = images.at(-1)?.taken;
          const mine = images.filter((i) => i.taken === taken).map((i) => i.name);
          await checkImages(staging, mine, "ENGINE_FAILED", dopts.signal);
          const tar = await resolveTool("tar");
          const t = spawnTool(tar, ["-C", staging, "-cf", "-", ...mine], { signal: dopts.signal, stdio: ["ignore", "pipe", "pipe"] });
          endAfter(t.child.stdout as Readable, t.done, out);
          await t.done;
        } finally {
          if (opts.staging_dir) await rm(staging, { recursive: true, force: true });
        }
      });
      return { tool: { name: "db2 BACKUP DATABASE", version: "" } };
    });
  }

  /** Db2 replaces a whole database: if the target is catalogued, that is what the confirmation is about. */
  async function inspectTarget(): Promise<TargetState> {
    return withSession(async (s) => {
      const out = await clp(s, ["LIST DATABASE DIRECTORY"], undefined, where);
      const exists = new RegExp(`Database alias\\s*=\\s*${db}\\s*$`, "im").test(out);
      return { exists, objects: exists ? [`${db} (the whole database is replaced)`] : [] };
    });
  }

  /**
   * The verified stream is unpacked into a private temp dir, checked with db2ckbkp, and only then given to RESTORE:
   * nothing reaches the instance before the stream ended cleanly (checksum matched).
   */
  async function restore(input: Readable, ropts: RestoreOptions): Promise<void> {
    if (!FORMATS.includes(ropts.format)) throw new DbkeepError("USAGE", `the db2 engine cannot restore a ${ropts.format} backup`);
    await resolveTool("db2", binDir);
    await withSession(async (s) => {
      const dir = join(s.dir, "image");
      await mkdir(dir, { mode: 0o700 });
      const tar = await resolveTool("tar");
      const t = spawnTool(tar, ["-C", dir, "-xf", "-"], { signal: ropts.signal, stdio: ["pipe", "ignore", "pipe"], errorCode: "CORRUPT_BACKUP" });
      await feedWhileReading(input, t);
      await t.done;
      const images = await imagesIn(dir);
      const first = images[0];
      if (!first) throw new DbkeepError("CORRUPT_BACKUP", "the backup holds no Db2 backup image");
      await checkImages(dir, images.map((i) => i.name), "CORRUPT_BACKUP", ropts.signal);
      const into = first.db !== db ? ` INTO ${db}` : "";
      const logs = join(s.dir, "logs");
      const statements = [];
      if (ropts.format === "image-online") {
        await mkdir(logs, { mode: 0o700 });
        statements.push(`RESTORE DATABASE ${first.db}${credentials()} FROM ${safePath(dir)} TAKEN AT ${first.taken}${into} LOGTARGET ${safePath(logs)} REPLACE EXISTING WITHOUT PROMPTING`);
        // An online image is consistent only with the logs it carries: roll forward through them and no further.
        statements.push(`ROLLFORWARD DATABASE ${db}${credentials()} TO END OF BACKUP AND COMPLETE OVERFLOW LOG PATH (${logs})`);
      } else {
        statements.push(`RESTORE DATABASE ${first.db}${credentials()} FROM ${safePath(dir)} TAKEN AT ${first.taken}${into} REPLACE EXISTING WITHOUT PROMPTING`);
      }
      await clp(s, statements, ropts.signal, where);
    });
  }

  return {
    name: "db2",
    tools: ["db2", "db2ckbkp"],
    format,
    extension: ".db2.tar",
    database: db,
    source: () => ({ engine: "db2", database: db, ...(opts.user ? { user: opts.user } : {}) }),
    async check() {
      const tools: Record<string, string> = {};
      for (const n of ["db2", "db2ckbkp"]) tools[n] = await resolveTool(n, binDir);
      return { tools };
    },
    dump,
    inspectTarget,
    restore,
    canRestore: (f) => FORMATS.includes(f),
  };
}

export function explainDb2Error(output: string): { hint?: string; retryable?: boolean; code?: ErrorCode } | undefined {
  if (/SQL30082N/.test(output)) return { code: "CONNECTION_FAILED", hint: "Db2 refused the user or password: check the datasource's user and password (password_env / password_file)" };
  if (/SQL1032N/.test(output)) return { code: "CONNECTION_FAILED", hint: "the Db2 instance is not started: run db2start as the instance owner (and check instance / DB2INSTANCE)", retryable: true };
  if (/SQL1013N/.test(output)) return { code: "CONNECTION_FAILED", hint: "the database is not catalogued in this instance: check database and instance" };
  if (/SQL1035N/.test(output)) return { hint: "an offline backup needs the database free of connections: stop the applications, or set online: true (needs archive logging)", retryable: true };
  if (/SQL2413N/.test(output)) return { hint: "an online backup needs archive logging: set LOGARCHMETH1 on the database, or use online: false" };
  if (/SQL1092N|SQL2036N/.test(output)) return { hint: "the user lacks SYSADM/SYSCTRL/SYSMAINT, or the staging directory is not writable by the instance owner" };
  return undefined;
}

export default createDb2Engine;
