import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IN_CI, ROOT } from "./env.js";

/** s3rver's fixed credentials (it checks signatures against them). */
export const S3RVER_KEY = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

export interface TestS3 {
  endpoint: string;
  port: number;
  bucket: string;
  dir: string;
  /** The store options (seed keys) that reach this server with the test credentials, given as environment variables. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/**
 * Runs in a child process, so the server's memory is not counted in the test's RSS. It exits when its stdin closes,
 * so a test process that dies does not leave it running.
 */
const CHILD = `
const S3rver = require("s3rver");
const [dir, bucket] = process.argv.slice(1);
const server = new S3rver({ address: "127.0.0.1", port: 0, directory: dir, silent: true, configureBuckets: [{ name: bucket }] });
server.run().then((addr) => process.stdout.write(JSON.stringify({ port: addr.port }) + "\\n"), (err) => { console.error(err); process.exit(1); });
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
`;

/**
 * s3rver on a free port of 127.0.0.1 with its own data directory and one bucket. Under CI a server that cannot start is
 * a failure (the caller's beforeAll throws); elsewhere too, since s3rver is an npm devDependency and always present.
 */
export async function startS3(o: { bucket?: string } = {}): Promise<TestS3> {
  const bucket = o.bucket ?? "dbkeep-test";
  const dir = mkdtempSync(join(tmpdir(), "dbkeep-s3rver-"));
  // s3rver's continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider: without it every truncated
  // listing (ListObjectsV2 pagination) answers 500.
  const child = spawn(process.execPath, ["--openssl-legacy-provider", "-e", CHILD, dir, bucket], { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`s3rver did not start within 20 s${IN_CI ? " (CI)" : ""}: ${stderr}`)), 20_000);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const line = out.split("\n")[0];
      if (out.includes("\n") && line) {
        clearTimeout(timer);
        try {
          resolve((JSON.parse(line) as { port: number }).port);
        } catch (err) {
          reject(err as Error);
        }
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited with code ${code}: ${stderr}`));
    });
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    port,
    bucket,
    dir,
    env: { TEST_S3_ACCESS_KEY: S3RVER_KEY.accessKeyId, TEST_S3_SECRET_KEY: S3RVER_KEY.secretAccessKey },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Environment for rclone's S3 backend (remote "x:") pointed at the server, as an independent client. */
export function rcloneEnv(endpoint: string): NodeJS.ProcessEnv {
  // AWS_* variables of the machine (e.g. AWS_CA_BUNDLE) would reach rclone's SDK and break a plain-HTTP endpoint.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AWS_") && !k.startsWith("RCLONE_")));
  return {
    ...env,
    RCLONE_CONFIG_X_TYPE: "s3",
    RCLONE_CONFIG_X_PROVIDER: "Other",
    RCLONE_CONFIG_X_ENDPOINT: endpoint,
    RCLONE_CONFIG_X_ACCESS_KEY_ID: S3RVER_KEY.accessKeyId,
    RCLONE_CONFIG_X_SECRET_ACCESS_KEY: S3RVER_KEY.secretAccessKey,
    RCLONE_CONFIG_X_REGION: "us-east-1",
    RCLONE_CONFIG_X_FORCE_PATH_STYLE: "true",
    RCLONE_CONFIG: "/dev/null",
  };
}
