import { spawn } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { CLI, CLI_ENV, ROOT } from "../helpers/env.js";
import { S3RVER_KEY, startS3, type TestS3 } from "../helpers/s3-server.js";
import { startSshd, type TestSshd } from "../helpers/sshd-server.js";

/** The stores a cell can write to: a local directory, s3rver, and OpenSSH's SFTP on loopback, started once per file. */
export interface MatrixStores {
  /** The `stores:` entry of a store. */
  entry(store: string): Record<string, unknown>;
  /** Environment the CLI needs for the store (S3 credentials). */
  env: Record<string, string>;
  /** The bytes of one stored object, read around dbkeep (the file, or a GetObject of another S3 client). */
  read(store: string, key: string): Promise<Buffer>;
  stop(): Promise<void>;
}

/** Starts the remote stores' servers (sshd only with `ssh`); one that cannot start stops the others and throws. */
export async function startStores(dir: string, o: { ssh: boolean }): Promise<MatrixStores> {
  const local = join(dir, "local-store");
  mkdirSync(local);
  const [s3r, sshr] = await Promise.allSettled([startS3({ bucket: "dbkeep-matrix" }), o.ssh ? startSshd() : Promise.resolve(undefined)]);
  if (s3r.status === "rejected" || sshr.status === "rejected") {
    if (s3r.status === "fulfilled") await s3r.value.stop();
    if (sshr.status === "fulfilled") await sshr.value?.stop();
    throw s3r.status === "rejected" ? s3r.reason : (sshr as PromiseRejectedResult).reason;
  }
  const s3: TestS3 = s3r.value;
  const sshd: TestSshd | undefined = sshr.value;
  const remote = sshd ? join(sshd.data, "matrix") : "";
  const client = new S3Client({ endpoint: s3.endpoint, region: "us-east-1", forcePathStyle: true, credentials: S3RVER_KEY, maxAttempts: 3 });
  const entries: Record<string, Record<string, unknown>> = {
    local: { type: "local", path: local },
    s3: { type: "s3", endpoint: s3.endpoint, bucket: s3.bucket, prefix: "matrix", access_key_env: "TEST_S3_ACCESS_KEY", secret_key_env: "TEST_S3_SECRET_KEY" },
    ...(sshd
      ? { ssh: { type: "ssh", host: sshd.host, port: sshd.port, user: sshd.user, path: remote, key_file: sshd.userKey.path, known_hosts: sshd.knownHosts, timeout: 20 } }
      : {}),
  };
  const s3Bucket = s3.bucket;
  return {
    entry: (store) => {
      const e = entries[store];
      if (!e) throw new Error(`no store ${store} in the matrix`);
      return e;
    },
    env: s3.env,
    async read(store, key) {
      if (store === "local") return readFileSync(join(local, key));
      if (store === "ssh") return readFileSync(join(remote, key));
      const r = await client.send(new GetObjectCommand({ Bucket: s3Bucket, Key: `matrix/${key}` }));
      return Buffer.from(await r.Body!.transformToByteArray());
    },
    async stop() {
      client.destroy();
      await Promise.all([s3.stop(), sshd?.stop()]);
    },
  };
}

export interface CliRun {
  args: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
  timedOut: boolean;
}

/**
 * The built CLI, as a user runs it, in its own process group: a run still going after `timeoutMs` is killed with its
 * dump and compressor children, so that a hang fails its cell (with what it printed) instead of stalling the file.
 */
export function runCli(args: string[], env: Record<string, string>, timeoutMs: number): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...CLI_ENV, ...env }, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // already gone
      }
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ args, code, signal, stdout, stderr, seconds: (Date.now() - started) / 1000, timedOut });
    });
  });
}

/** One line for an assertion message: what ran, how it ended, and the end of what it printed. */
export function describeRun(r: CliRun): string {
  const how = r.timedOut ? `killed after ${r.seconds.toFixed(1)} s (hung)` : `exit ${r.code ?? r.signal} after ${r.seconds.toFixed(1)} s`;
  const tail = (s: string) => s.split("\n").filter(Boolean).slice(-12).join("\n");
  return `dbkeep ${r.args.join(" ")}: ${how}\n--- stderr ---\n${tail(r.stderr)}\n--- stdout ---\n${tail(r.stdout)}`;
}

/** `dbkeep backup --json`'s account of one job. */
export interface BackupResult {
  job: string;
  ok: boolean;
  backup: string;
  key: string;
  bytes: number;
  raw_bytes: number;
  error?: string;
}

export function backupResult(r: CliRun): BackupResult | undefined {
  try {
    return (JSON.parse(r.stdout) as { jobs: BackupResult[] }).jobs[0];
  } catch {
    return undefined;
  }
}

/** The fields of a manifest the matrix checks. */
export interface MatrixManifest {
  id: string;
  format: string;
  compression: string;
  encryption: null | { format: string; recipients: { type: string; recipient?: string }[] };
  key: string;
  raw_bytes: number;
  stored_bytes: number;
  selection?: { tables: string[] };
  differential?: { kind: string; base?: { id: string }; track_deletes?: boolean };
}

export function manifestKey(dataKey: string, id: string): string {
  return `${dataKey.slice(0, dataKey.lastIndexOf("/"))}/${id}.manifest.json`;
}

const MAGIC: Record<string, Buffer> = {
  gzip: Buffer.from([0x1f, 0x8b]),
  zstd: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]),
  lz4: Buffer.from([0x04, 0x22, 0x4d, 0x18]),
};
const AGE = Buffer.from("age-encryption.org/v1\n");

/**
 * What a stored object's first bytes say about it: `age` when encrypted, otherwise the compression whose magic
 * number it starts with, or `none`. The matrix checks a cell really ran what its name says.
 */
export function sniff(data: Buffer): string {
  if (data.subarray(0, AGE.length).equals(AGE)) return "age";
  for (const [name, magic] of Object.entries(MAGIC)) if (data.subarray(0, magic.length).equals(magic)) return name;
  return "none";
}
