import { spawn, spawnSync } from "node:child_process";
import { get } from "node:http";
import { chownSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, inject } from "vitest";
import { ROOT } from "../helpers/env.js";

/**
 * podman as the container tests run it. Its settings (runc, ulimits, cgroupfs) are in containers.conf beside this
 * file, found through CONTAINERS_CONF; every container uses --network=host, so it reaches the servers on 127.0.0.1.
 */
export const CONTAINERS_CONF = join(ROOT, "test/container/containers.conf");
const PODMAN_ENV = { ...process.env, CONTAINERS_CONF };

/** The image that global-setup.ts built from deploy/Dockerfile for this run ("" when it could not be built). */
export const IMAGE = inject("dbkeepImage");
export const UNAVAILABLE = inject("containerUnavailable");

/** The image's user: deploy/Dockerfile gives it a fixed uid and gid, so that volumes can be prepared for it. */
export const IMAGE_UID = 10001;

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs podman and waits (secrets go in `env`, never in `args`: `-e NAME` takes the value from there). */
export function podman(args: string[], opts: { env?: Record<string, string>; timeout?: number } = {}): Result {
  const r = spawnSync("podman", args, { env: { ...PODMAN_ENV, ...opts.env }, encoding: "utf8", timeout: opts.timeout ?? 300_000, maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

export function podmanAsync(args: string[], opts: { env?: Record<string, string> } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn("podman", args, { env: { ...PODMAN_ENV, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export interface RunOptions {
  /** Variables set in the container; the values are passed through podman's environment, not its argv. */
  env?: Record<string, string>;
  /** host:container[:ro] bind mounts, or volume:container. */
  volumes?: string[];
  name?: string;
  entrypoint?: string;
  detach?: boolean;
  pod?: string;
  extra?: string[];
}

/** `podman run --rm --network=host [...] IMAGE ARGS`, as `docker run` is used in the seeds' examples. */
export function runArgs(args: string[], o: RunOptions = {}): { argv: string[]; env: Record<string, string> } {
  const argv = ["run", ...(o.detach ? ["-d"] : ["--rm"]), ...(o.pod ? ["--pod", o.pod] : ["--network=host"])];
  if (o.name) argv.push("--name", o.name);
  if (o.entrypoint !== undefined) argv.push("--entrypoint", o.entrypoint);
  for (const v of o.volumes ?? []) argv.push("-v", v);
  for (const k of Object.keys(o.env ?? {})) argv.push("-e", k);
  argv.push(...(o.extra ?? []), IMAGE, ...args);
  return { argv, env: o.env ?? {} };
}

export function run(args: string[], o: RunOptions = {}): Result {
  const { argv, env } = runArgs(args, o);
  return podman(argv, { env });
}

export function runAsync(args: string[], o: RunOptions = {}): Promise<Result> {
  const { argv, env } = runArgs(args, o);
  return podmanAsync(argv, { env });
}

/** A shell command inside the image (entrypoint replaced), for what dbkeep itself does not print. */
export function sh(script: string, o: RunOptions = {}): Result {
  return run(["-c", script], { ...o, entrypoint: "sh" });
}

/**
 * A host directory for a volume that the image's user may write, as a user would prepare one
 * (`chown 10001:10001 DIR`); removed after the file's tests.
 */
export function volumeDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  mkdirSync(dir, { recursive: true });
  chownSync(dir, IMAGE_UID, IMAGE_UID);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Removes containers (and their anonymous volumes) that a test started by name, whatever state they are in. */
export function removeContainers(...names: string[]): void {
  if (names.length) podman(["rm", "-f", "-v", "-t", "2", ...names]);
}

/** The process's unique tag for container, pod and database names. */
export const RUN_ID = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;

export async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * GET from the host, on a fresh connection each time (fetch would reuse a kept-alive socket that the server closed
 * while a synchronous podman call held this process); undefined when nothing answers.
 */
export function httpGet(url: string): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    const req = get(url, { agent: false, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", () => resolve(undefined));
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(undefined));
  });
}

declare module "vitest" {
  export interface ProvidedContext {
    dbkeepImage: string;
    containerUnavailable: string;
  }
}
