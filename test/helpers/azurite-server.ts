import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IN_CI, ROOT } from "./env.js";

/** Azurite's well-known development account (documented by Microsoft; not a secret). */
export const AZURITE_ACCOUNT = "devstoreaccount1";
export const AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export interface TestAzurite {
  /** Blob endpoint of the dev account, e.g. http://127.0.0.1:41234/devstoreaccount1 */
  endpoint: string;
  port: number;
  connectionString: string;
  stop(): Promise<void>;
}

const BIN = join(ROOT, "node_modules/azurite/dist/src/blob/main.js");

/** Whether Azurite is installed; under CI its absence is a failure, not a skip. */
export function azuriteAvailable(): boolean {
  const ok = existsSync(BIN);
  if (!ok && IN_CI) throw new Error(`Azurite is not installed (${BIN} is missing) under CI: run npm install`);
  return ok;
}

/**
 * Azurite's blob service as a child process (its memory is not the test's) on a free loopback port, with its data
 * in a temp dir removed by stop().
 */
export async function startAzurite(): Promise<TestAzurite> {
  const dir = mkdtempSync(join(tmpdir(), "dbkeep-azurite-"));
  const child = spawn(process.execPath, [BIN, "--blobHost", "127.0.0.1", "--blobPort", "0", "--location", dir, "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Azurite did not start within 30 s: ${output}`)), 30_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      const m = /listens on https?:\/\/127\.0\.0\.1:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`Azurite exited with code ${code}: ${output}`));
    });
  });
  const endpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
  return {
    endpoint,
    port,
    connectionString: `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint};`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(killer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
