import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { homedir, userInfo } from "node:os";
import { posix } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import ssh2, { type AuthenticationType, type AnyAuthMethod, type ParsedKey, type SFTPWrapper, type Stats } from "ssh2";
import { DbkeepError } from "../../core/errors.js";
import type { Secret } from "../../core/redact.js";
import type { PutOptions, Store, StoreObject } from "../store.js";
import { checkHostKey, fingerprint, hostKeyAlgorithms, knownKeyTypes, parseKnownHosts, wireKeyType, type KnownHostLine } from "./known-hosts.js";
import type { SshStoreOptions } from "./plugin.js";
import { SftpReader, SftpWriter } from "./streams.js";

export { sshStoreSchema, type SshStoreOptions } from "./plugin.js";

/** Same mark as the local store: `.name.dbkeep-partial-xxxx` beside the final name. */
const PARTIAL_MARK = ".dbkeep-partial-";

/** SFTP status codes (draft-ietf-secsh-filexfer-02), as ssh2 puts them in `err.code`. */
const SFTP_NO_SUCH_FILE = 2;
const SFTP_PERMISSION_DENIED = 3;

// ssh2 is CommonJS: Node's ESM loader finds only its default export.
const { Client, utils } = ssh2;
type Client = InstanceType<typeof Client>;

const DEFAULT_HOST_KEY_ALGORITHMS = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];

export type SshStoreInput = Omit<SshStoreOptions, "type" | "port" | "timeout"> & { port?: number; timeout?: number };

export interface SshStoreDeps {
  /** "ssh:<configured name>", used in messages. */
  name?: string;
  password?: () => Secret | undefined;
  keyPassphrase?: () => Secret | undefined;
  warn?: (message: string) => void;
}

interface Session {
  client: Client;
  sftp: SFTPWrapper;
  /** Set when the connection closed; every later request fails, and the next operation opens a new connection. */
  lost: Error | undefined;
  /** Told when the connection is lost: ssh2 silently drops requests sent on a closed channel, so nobody may wait. */
  watchers: Set<(err: Error) => void>;
}

function markLost(s: Session, err: Error): void {
  if (s.lost) return;
  s.lost = err;
  for (const w of [...s.watchers]) w(err);
  s.watchers.clear();
}

function watch(s: Session, fn: (err: Error) => void): () => void {
  if (s.lost) {
    const lost = s.lost;
    queueMicrotask(() => fn(lost));
    return () => undefined;
  }
  s.watchers.add(fn);
  return () => s.watchers.delete(fn);
}

function expandHome(p: string): string {
  return p === "~" ? homedir() : p.startsWith("~/") ? posix.join(homedir(), p.slice(2)) : p;
}

/** As ssh: the login name of the user running dbkeep (a container without a passwd entry has only $USER). */
function localUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? process.env.LOGNAME ?? "root";
  }
}

function sftpCode(err: unknown): unknown {
  return (err as { code?: unknown } | undefined)?.code;
}

/**
 * A directory on a host reached over SSH, written through SFTP. One connection per store, opened at the first
 * operation (and again after it was lost), closed by close(). The host key is checked against known_hosts or a
 * pinned fingerprint before anything is sent. put() streams into `.name.dbkeep-partial-xxxx` beside the final name
 * (mode 0600, directories 0700), fsyncs it where the server offers fsync@openssh.com and renames it into place with
 * posix-rename@openssh.com, which replaces an existing object atomically. With ifAbsent it is published with
 * hardlink@openssh.com instead, which the server refuses for an existing name (atomicCreate), or where the server
 * lacks that extension with a check and a plain rename.
 */
export function createSshStore(opts: SshStoreInput, deps: SshStoreDeps = {}): Store {
  const port = opts.port ?? 22;
  const timeoutMs = (opts.timeout ?? 30) * 1000;
  const user = opts.user ?? localUser();
  const name = deps.name ?? `ssh:${user}@${opts.host}:${opts.path}`;
  const where = `${opts.host}:${port}`;
  const root = opts.path.length > 1 ? opts.path.replace(/\/+$/, "") : opts.path;
  /** What keys are appended to ("" for the root directory, so that keys become "/key"). */
  const base = root === "/" ? "" : root;
  const tag = `[store:${name}]`;

  let current: Promise<Session> | undefined;

  function remote(key: string): string {
    const parts = key.split("/");
    if (key === "" || key.startsWith("/") || key.includes("\0") || parts.some((p) => p === "" || p === "." || p === "..")) {
      throw new DbkeepError("STORE_FAILED", `${tag} invalid key "${key}"`);
    }
    return `${base}/${key}`;
  }

  function keyOf(path: string): string {
    return path.slice(base.length + 1);
  }

  // ---- connection -------------------------------------------------------------------------------------------------

  function loadKnownHosts(): { lines: KnownHostLine[]; file: string } {
    const explicit = opts.known_hosts !== undefined;
    const file = expandHome(opts.known_hosts ?? "~/.ssh/known_hosts");
    const files = explicit ? [file] : [file, "/etc/ssh/ssh_known_hosts"];
    const lines: KnownHostLine[] = [];
    for (const f of files) {
      let text: string;
      try {
        text = readFileSync(f, "utf8");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT" && !explicit) continue;
        throw new DbkeepError("CONNECTION_FAILED", `${tag} cannot read known_hosts file ${f}: ${(err as Error).message}`, {
          hint: `create it with: ssh-keyscan -p ${port} ${opts.host} >> ${f}`,
        });
      }
      lines.push(...parseKnownHosts(text));
    }
    return { lines, file };
  }

  function loadKey(path: string, passphrase: Secret | undefined, required: boolean): ParsedKey | undefined {
    let data: Buffer;
    try {
      data = readFileSync(path);
    } catch (err) {
      if (!required) return undefined;
      throw new DbkeepError("CONNECTION_FAILED", `${tag} cannot read key_file ${path}: ${(err as Error).message}`, { hint: "give the path of a private key readable by the user running dbkeep" });
    }
    const parsed = utils.parseKey(data, passphrase?.reveal());
    if (parsed instanceof Error) {
      if (!required) return undefined;
      const encrypted = /encrypted|passphrase/i.test(parsed.message);
      throw new DbkeepError(
        "CONNECTION_FAILED",
        encrypted
          ? `${tag} key_file ${path} is encrypted and ${passphrase ? "the passphrase does not open it" : "no passphrase was given"}`
          : `${tag} cannot use key_file ${path}: ${parsed.message}`,
        { hint: encrypted ? "set key_passphrase_env or key_passphrase_file" : "give an OpenSSH or PEM private key (ed25519, ecdsa or rsa)" },
      );
    }
    return Array.isArray(parsed) ? parsed[0] : parsed;
  }

  /** The authentication methods to try, in order, and a description of them for messages. */
  function authMethods(): { methods: AnyAuthMethod[]; described: string[] } {
    const methods: AnyAuthMethod[] = [];
    const described: string[] = [];
    const passphrase = deps.keyPassphrase?.();
    if (opts.key_file) {
      const file = expandHome(opts.key_file);
      methods.push({ type: "publickey", username: user, key: loadKey(file, passphrase, true)! });
      described.push(`key_file ${file}`);
    }
    const password = deps.password?.();
    if (password) {
      methods.push({ type: "password", username: user, password: password.reveal() });
      methods.push({
        type: "keyboard-interactive",
        username: user,
        prompt: (_n, _i, _l, prompts, finish) => finish(prompts.map(() => password.reveal())),
      });
      described.push(opts.password_env ? `password_env ${opts.password_env}` : opts.password_file ? `password_file ${opts.password_file}` : "password");
    }
    if (!opts.key_file && !password) {
      // As ssh does without options: the agent, then the default key files that open without a passphrase.
      if (process.env.SSH_AUTH_SOCK) {
        methods.push({ type: "agent", username: user, agent: process.env.SSH_AUTH_SOCK });
        described.push("ssh-agent");
      }
      for (const f of ["id_ed25519", "id_ecdsa", "id_rsa"]) {
        const file = posix.join(homedir(), ".ssh", f);
        const key = existsSync(file) ? loadKey(file, passphrase, false) : undefined;
        if (key) {
          methods.push({ type: "publickey", username: user, key });
          described.push(file);
        }
      }
    }
    return { methods, described };
  }

  function connect(): Promise<Session> {
    const { methods, described } = authMethods();
    if (methods.length === 0) {
      return Promise.reject(
        new DbkeepError("CONNECTION_FAILED", `${tag} no credentials to log in to ${where} as ${user}`, {
          hint: "set key_file (a private key whose public key is in the server's authorized_keys) or password_env / password_file",
        }),
      );
    }
    let hostKeyAlgos = DEFAULT_HOST_KEY_ALGORITHMS;
    let knownHosts: { lines: KnownHostLine[]; file: string } | undefined;
    if (!opts.host_key) {
      knownHosts = loadKnownHosts();
      // Ask first for a key type the file knows for this host, so a host with several keys is not "unknown".
      const preferred = knownKeyTypes(knownHosts.lines, opts.host, port).flatMap(hostKeyAlgorithms).filter((a) => DEFAULT_HOST_KEY_ALGORITHMS.includes(a));
      hostKeyAlgos = [...new Set([...preferred, ...DEFAULT_HOST_KEY_ALGORITHMS])];
    }
    let refusal: DbkeepError | undefined;

    const verify = (key: Buffer): boolean => {
      const fp = fingerprint(key);
      const type = (wireKeyType(key) ?? "unknown").replace(/^ssh-/, "").toUpperCase();
      const keyscan = `ssh-keyscan ${port === 22 ? "" : `-p ${port} `}${opts.host}`;
      if (opts.host_key) {
        if (fp === opts.host_key) return true;
        refusal = new DbkeepError("CONNECTION_FAILED", `${tag} host key of ${where} is ${type} ${fp}, not the pinned host_key ${opts.host_key}: refused`, {
          hint: `if the server's key was replaced on purpose, check the new one (${keyscan} | ssh-keygen -lf -) and set host_key: "${fp}"`,
        });
        return false;
      }
      const kh = knownHosts!;
      const verdict = checkHostKey(kh.lines, opts.host, port, key);
      if (verdict.ok) return true;
      if (verdict.reason === "unknown") {
        refusal = new DbkeepError("CONNECTION_FAILED", `${tag} host key of ${where} (${type} ${fp}) is not in ${kh.file}: refused`, {
          hint: `if ${fp} is the server's key, trust it with: ${keyscan} >> ${kh.file} (or pin it with host_key: "${fp}")`,
        });
      } else if (verdict.reason === "changed") {
        refusal = new DbkeepError("CONNECTION_FAILED", `${tag} host key of ${where} has CHANGED (now ${type} ${fp}, line ${verdict.line} of ${kh.file} has another): refused, this may be an attack`, {
          hint: `if the server's key was replaced on purpose: ssh-keygen -R '${port === 22 ? opts.host : `[${opts.host}]:${port}`}' -f ${kh.file} && ${keyscan} >> ${kh.file}`,
        });
      } else {
        refusal = new DbkeepError("CONNECTION_FAILED", `${tag} host key of ${where} (${type} ${fp}) is marked @revoked in ${kh.file}: refused`, {
          hint: "the server presents a key its administrators revoked; ask them for its current key",
        });
      }
      return false;
    };

    return new Promise<Session>((resolve, reject) => {
      const client = new Client();
      let ready = false;
      let serverAllows: AuthenticationType[] = [];
      let next = 0;
      const session: Session = { client, sftp: undefined as unknown as SFTPWrapper, lost: undefined, watchers: new Set() };

      const failBeforeReady = (err: Error & { level?: string; code?: string }) => {
        if (refusal) return reject(refusal);
        if (err.level === "client-authentication") {
          const offered = serverAllows.length > 0 ? ` (the server accepts: ${serverAllows.join(", ")})` : "";
          return reject(
            new DbkeepError("CONNECTION_FAILED", `${tag} authentication as ${user} on ${where} failed with ${described.join(", ")}${offered}`, {
              hint: opts.key_file
                ? `check that the public key of ${expandHome(opts.key_file)} is in ~${user}/.ssh/authorized_keys on ${opts.host} (ssh-copy-id -i ${expandHome(opts.key_file)} -p ${port} ${user}@${opts.host})`
                : "check the user and the password, or use key_file",
              cause: err,
            }),
          );
        }
        const code = err.code;
        const retryable = code !== "ENOTFOUND";
        const reason =
          code === "ECONNREFUSED"
            ? "connection refused"
            : code === "ENOTFOUND"
              ? "host not found"
              : err.level === "client-timeout"
                ? `no SSH handshake within ${timeoutMs / 1000} s`
                : err.message;
        const hint =
          code === "ECONNREFUSED"
            ? `check that an SSH server listens on ${where}`
            : code === "ENOTFOUND"
              ? `check the host name "${opts.host}"`
              : `check that ${where} is reachable and runs an SSH server (timeout: ${timeoutMs / 1000} s)`;
        reject(new DbkeepError("CONNECTION_FAILED", `${tag} cannot connect to ${where}: ${reason}`, { hint, retryable, cause: err }));
      };

      client.on("error", (err: Error & { level?: string }) => {
        if (!ready) return failBeforeReady(err);
        markLost(session, err);
      });
      client.on("close", () => {
        markLost(session, new Error("the connection closed"));
        if (!ready) failBeforeReady(new Error("the server closed the connection during the handshake"));
        // Closed between login and the SFTP session (no-op once the session was handed out).
        else reject(new DbkeepError("CONNECTION_FAILED", `${tag} ${where} closed the connection before SFTP started`, { retryable: true, hint: "check the SSH server's logs" }));
      });
      client.on("ready", () => {
        ready = true;
        client.sftp((err, sftp) => {
          if (err) {
            client.end();
            return reject(
              new DbkeepError("CONNECTION_FAILED", `${tag} ${where} refused the SFTP subsystem: ${err.message}`, {
                hint: "enable SFTP on the server (Subsystem sftp internal-sftp in sshd_config)",
                cause: err,
              }),
            );
          }
          session.sftp = sftp;
          // The extensions the server announced (ssh2 keeps them in a field of its own).
          const announced = (sftp as unknown as { _extensions?: Record<string, unknown> })._extensions;
          if (announced) hardlinks = "hardlink@openssh.com" in announced;
          sftp.on("error", (e: Error) => markLost(session, e));
          sftp.on("close", () => markLost(session, new Error("the SFTP session closed")));
          resolve(session);
        });
      });

      client.connect({
        host: opts.host,
        port,
        username: user,
        readyTimeout: timeoutMs,
        keepaliveInterval: 15_000,
        keepaliveCountMax: 4,
        algorithms: { serverHostKey: hostKeyAlgos as never },
        hostVerifier: verify,
        authHandler: (authsLeft, _partial, cb) => {
          if (authsLeft) serverAllows = authsLeft;
          while (next < methods.length) {
            const m = methods[next++]!;
            const kind: AuthenticationType = m.type === "agent" ? "publickey" : m.type;
            if (authsLeft && !authsLeft.includes(kind)) continue;
            return cb(m);
          }
          cb(false as never);
        },
      });
    });
  }

  async function session(): Promise<Session> {
    if (current) {
      const s = await current.catch(() => undefined);
      if (s && !s.lost) return s;
      if (s) s.client.end();
    }
    const p = connect();
    current = p;
    p.catch(() => {
      if (current === p) current = undefined;
    });
    return p;
  }

  // ---- SFTP requests as promises ------------------------------------------------------------------------------

  function call<T>(s: Session, fn: (cb: (err: Error | undefined | null, value?: T) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (s.lost) return reject(s.lost);
      const unwatch = watch(s, reject);
      try {
        fn((err, value) => {
          unwatch();
          if (err) reject(err);
          else resolve(value as T);
        });
      } catch (err) {
        unwatch();
        reject(err as Error);
      }
    });
  }

  const stat = (s: Session, p: string) => call<Stats>(s, (cb) => s.sftp.stat(p, cb));
  const unlink = (s: Session, p: string) => call<void>(s, (cb) => s.sftp.unlink(p, cb));

  async function mkdirs(s: Session, dir: string): Promise<void> {
    try {
      if ((await stat(s, dir)).isDirectory()) return;
    } catch (err) {
      if (sftpCode(err) !== SFTP_NO_SUCH_FILE) throw err;
    }
    const parent = posix.dirname(dir);
    if (parent !== dir && parent !== "." && parent !== "/") await mkdirs(s, parent);
    try {
      await call<void>(s, (cb) => s.sftp.mkdir(dir, { mode: 0o700 }, cb));
    } catch (err) {
      // Another put may have made it meanwhile (OpenSSH answers a plain "Failure" for EEXIST).
      const st = await stat(s, dir).catch(() => undefined);
      if (!st?.isDirectory()) throw err;
    }
  }

  /** Atomic replace with posix-rename@openssh.com; plain SFTP rename refuses an existing target, so remove it first. */
  async function renameInto(s: Session, from: string, to: string): Promise<void> {
    try {
      await call<void>(s, (cb) => s.sftp.ext_openssh_rename(from, to, cb));
      return;
    } catch (err) {
      if (!/does not support/.test((err as Error).message)) throw err;
    }
    // Without the extension the replace is not atomic: for a moment no object is under the key.
    try {
      await call<void>(s, (cb) => s.sftp.rename(from, to, cb));
    } catch (err) {
      if (s.lost) throw err;
      await unlink(s, to).catch(() => undefined);
      await call<void>(s, (cb) => s.sftp.rename(from, to, cb));
    }
  }

  /** Whether the server offers hardlink@openssh.com: known from its SFTP greeting, or from the first attempt. */
  let hardlinks: boolean | undefined;

  async function exists(s: Session, path: string): Promise<boolean> {
    try {
      await call<Stats>(s, (cb) => s.sftp.lstat(path, cb));
      return true;
    } catch (err) {
      if (!s.lost && sftpCode(err) === SFTP_NO_SUCH_FILE) return false;
      throw err;
    }
  }

  /**
   * Publishes `from` as `to` only if nothing is there. With hardlink@openssh.com the server's link(2) decides
   * (EEXIST), atomically; without it, a check and then a plain SFTP rename, which the protocol says must fail on an
   * existing target (OpenSSH's does, with link(2) too), but other servers may replace it.
   */
  async function publishNew(s: Session, from: string, to: string, key: string): Promise<void> {
    const alreadyExists = () => new DbkeepError("ALREADY_EXISTS", `${tag} ${key} already exists`);
    if (hardlinks !== false) {
      try {
        await call<void>(s, (cb) => s.sftp.ext_openssh_hardlink(from, to, cb));
        hardlinks = true;
        // The object is published; a temporary name that cannot be removed now is left for prune.
        await unlink(s, from).catch(() => undefined);
        return;
      } catch (err) {
        if (s.lost) throw err;
        if (await exists(s, to)) throw alreadyExists();
        // Not offered, or refused for another reason than an existing name (a server that denies the request, a
        // file system without hard links): the rename below, and no claim of atomicity from now on.
        hardlinks = false;
      }
    }
    if (await exists(s, to)) throw alreadyExists();
    try {
      await call<void>(s, (cb) => s.sftp.rename(from, to, cb));
    } catch (err) {
      if (!s.lost && (await exists(s, to))) throw alreadyExists();
      throw err;
    }
  }

  function lostError(s: Session, action: string, key: string, extra = ""): DbkeepError {
    const reason = s.lost?.message ?? "the connection closed";
    return new DbkeepError("STORE_FAILED", `${tag} connection to ${where} lost while ${action} ${key}${extra}: ${reason}`, {
      hint: "check the network and the SSH server; the job's retry settings decide whether it is tried again",
      retryable: true,
      cause: s.lost,
    });
  }

  function fail(s: Session | undefined, action: string, key: string, err: unknown): DbkeepError {
    if (err instanceof DbkeepError) return err;
    if (s?.lost) return lostError(s, action, key);
    const code = sftpCode(err);
    const hint =
      code === SFTP_PERMISSION_DENIED
        ? `check that ${user} may write to ${root} on ${opts.host}`
        : code === SFTP_NO_SUCH_FILE
          ? `check that ${root} exists on ${opts.host}`
          : undefined;
    return new DbkeepError("STORE_FAILED", `${tag} ${action} ${key} failed: ${(err as Error).message}`, { cause: err, ...(hint ? { hint } : {}) });
  }

  // ---- the Store ------------------------------------------------------------------------------------------------

  return {
    name,

    get atomicCreate() {
      return hardlinks === true;
    },

    async put(key: string, body: Readable, putOpts: PutOptions = {}) {
      const final = remote(key);
      const dir = posix.dirname(final);
      const tmp = `${dir}/.${posix.basename(final)}${PARTIAL_MARK}${randomBytes(6).toString("hex")}`;
      // The body may fail before it is piped anywhere; that failure is reported by pipeline() below, not thrown.
      body.on("error", () => undefined);
      const s = await session();
      let handle: Buffer | undefined;
      let writer: SftpWriter | undefined;
      let bytes = 0;
      const uploadLost = () => lostError(s, "uploading", key, ` after ${writer?.written ?? 0} bytes (the partial upload is left for prune)`);
      try {
        await mkdirs(s, dir);
        if (body.errored) throw body.errored;
        putOpts.signal?.throwIfAborted();
        handle = await call<Buffer>(s, (cb) => s.sftp.open(tmp, "wx", { mode: 0o600 }, cb));
        // A lost connection fails the writer with the store's own error: it is what travels up the backup pipeline.
        const w = new SftpWriter(s.sftp, handle, { watch: (fn) => watch(s, () => fn(uploadLost())) });
        writer = w;
        body.on("data", (c: Buffer) => (bytes += c.length));
        await pipeline(body, w, ...(putOpts.signal ? [{ signal: putOpts.signal }] : []));
        const h = handle;
        await call<void>(s, (cb) => s.sftp.ext_openssh_fsync(h, cb)).catch((err: Error) => {
          if (!/does not support/.test(err.message)) throw err;
        });
        handle = undefined;
        await call<void>(s, (cb) => s.sftp.close(h, cb));
        if (putOpts.ifAbsent) await publishNew(s, tmp, final, key);
        else await renameInto(s, tmp, final);
        return { bytes };
      } catch (err) {
        // Let the connection's close events land first: a request failing with the connection is not a server error.
        await new Promise((r) => setImmediate(r));
        if (/^No response from server$/.test((err as Error | undefined)?.message ?? "")) markLost(s, err as Error);
        if (!s.lost) {
          // The connection still works: leave nothing behind. Otherwise the partial stays, listed as such for prune.
          if (handle) {
            const h = handle;
            await call<void>(s, (cb) => s.sftp.close(h, cb)).catch(() => undefined);
          }
          await unlink(s, tmp).catch(() => undefined);
        }
        if (err instanceof DbkeepError) throw err;
        if (s.lost) throw uploadLost();
        if ((err as Error).name === "AbortError") throw new DbkeepError("ABORTED", `${tag} upload of ${key} was cancelled`, { cause: err });
        // An error of the body (e.g. the dump failed) is not the store's fault: pass it through as it is. It comes
        // first: writes still in flight when the body failed may fail too, as a consequence.
        if (body.errored) throw body.errored;
        if (writer?.failure) throw fail(s, "write", key, writer.failure);
        throw fail(s, "write", key, err);
      }
    },

    async get(key: string, getOpts: { signal?: AbortSignal } = {}) {
      const path = remote(key);
      getOpts.signal?.throwIfAborted();
      const s = await session();
      let handle: Buffer;
      let size: number;
      try {
        handle = await call<Buffer>(s, (cb) => s.sftp.open(path, "r", cb));
      } catch (err) {
        if (!s.lost && sftpCode(err) === SFTP_NO_SUCH_FILE) throw new DbkeepError("STORE_NOT_FOUND", `${tag} ${key} not found`);
        throw fail(s, "read", key, err);
      }
      const h = handle;
      const closeHandle = () => {
        if (!s.lost) s.sftp.close(h, () => undefined);
      };
      try {
        const st = await call<Stats>(s, (cb) => s.sftp.fstat(h, cb));
        if (!st.isFile()) throw new DbkeepError("STORE_NOT_FOUND", `${tag} ${key} not found (not a file)`);
        size = st.size;
      } catch (err) {
        closeHandle();
        throw fail(s, "read", key, err);
      }
      const reader = new SftpReader(s.sftp, h, size, {
        watch: (fn) => watch(s, fn),
        onClose: closeHandle,
        mapError: (err) => (s.lost ? lostError(s, "downloading", key) : fail(s, "read", key, err)),
      });
      const signal = getOpts.signal;
      if (signal) {
        const onAbort = () => reader.destroy(new DbkeepError("ABORTED", `${tag} download of ${key} was cancelled`, { cause: signal.reason }));
        signal.addEventListener("abort", onAbort, { once: true });
        reader.once("close", () => signal.removeEventListener("abort", onAbort));
      }
      return reader;
    },

    async stat(key: string) {
      const path = remote(key);
      const s = await session();
      try {
        const st = await stat(s, path);
        return st.isFile() ? { key, size: st.size, modified: new Date(st.mtime * 1000) } : undefined;
      } catch (err) {
        if (!s.lost && sftpCode(err) === SFTP_NO_SUCH_FILE) return undefined;
        throw fail(s, "stat", key, err);
      }
    },

    async *list(prefix: string): AsyncIterable<StoreObject> {
      // Walk only the deepest directory the prefix names, then filter by the full prefix.
      const slash = prefix.lastIndexOf("/");
      const start = slash >= 0 ? `${base}/${prefix.slice(0, slash)}` : root;
      const s = await session();
      const walk = async function* (dir: string): AsyncIterable<{ path: string; attrs: Stats }> {
        let entries;
        try {
          entries = await call<{ filename: string; attrs: Stats }[]>(s, (cb) => s.sftp.readdir(dir, cb));
        } catch (err) {
          if (!s.lost && sftpCode(err) === SFTP_NO_SUCH_FILE) return;
          throw fail(s, "list", keyOf(dir) || "/", err);
        }
        for (const e of entries) {
          if (e.filename === "." || e.filename === "..") continue;
          const p = `${dir}/${e.filename}`;
          if (e.attrs.isDirectory()) yield* walk(p);
          else if (e.attrs.isFile()) yield { path: p, attrs: e.attrs };
        }
      };
      for await (const f of walk(start)) {
        const rel = keyOf(f.path);
        const base = posix.basename(rel);
        const partial = base.startsWith(".") && base.includes(PARTIAL_MARK);
        const logical = partial ? posix.join(posix.dirname(rel), base.slice(1, base.indexOf(PARTIAL_MARK))) : rel;
        if (!logical.startsWith(prefix)) continue;
        yield { key: rel, size: f.attrs.size, modified: new Date(f.attrs.mtime * 1000), ...(partial ? { partial: true } : {}) };
      }
    },

    async delete(keys: string[]) {
      if (keys.length === 0) return;
      const paths = keys.map((k) => [k, remote(k)] as const);
      const s = await session();
      const dirs = new Set<string>();
      for (const [key, p] of paths) {
        try {
          await unlink(s, p);
          dirs.add(posix.dirname(p));
        } catch (err) {
          if (s.lost || sftpCode(err) !== SFTP_NO_SUCH_FILE) throw fail(s, "delete", key, err);
        }
      }
      // Remove directories the deletes left empty, up to the root (rmdir fails on non-empty ones, which is fine).
      for (let dir of dirs) {
        while (dir !== root && dir.startsWith(base + "/")) {
          const d = dir;
          try {
            await call<void>(s, (cb) => s.sftp.rmdir(d, cb));
          } catch {
            break;
          }
          dir = posix.dirname(dir);
        }
      }
    },

    async close() {
      const p = current;
      current = undefined;
      const s = await p?.catch(() => undefined);
      if (s) {
        await new Promise<void>((resolve) => {
          if (s.lost) return resolve();
          s.client.once("close", () => resolve());
          s.client.end();
          setTimeout(resolve, 2000).unref();
        });
      }
    },
  };
}

export default createSshStore;
