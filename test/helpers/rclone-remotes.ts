import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IN_CI } from "./env.js";

/** Whether rclone is installed; under CI its absence is a failure, not a skip. */
export function rcloneAvailable(): boolean {
  const ok = spawnSync("rclone", ["version"]).status === 0;
  if (!ok && IN_CI) throw new Error("rclone is not installed under CI (scripts/test-env.sh installs it)");
  return ok;
}

/** Whether an OpenSSH server can be started here; under CI its absence is a failure. */
export function sshdAvailable(): boolean {
  const ok = existsSync("/usr/sbin/sshd") && spawnSync("ssh-keygen", ["-?"]).error === undefined;
  if (!ok && IN_CI) throw new Error("/usr/sbin/sshd or ssh-keygen is missing under CI (scripts/test-env.sh installs openssh-server)");
  return ok;
}

/** A local remote (rclone's `local` backend) named LOC, configured by environment alone. */
export const LOCAL_REMOTE_ENV = { RCLONE_CONFIG_LOC_TYPE: "local" } as const;

export interface TestSftp {
  port: number;
  /** A directory on the server (the same machine) for the test's files. */
  dir: string;
  /** rclone env config of a remote named SFT that reaches this server with a key and a pinned host key. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/**
 * A private OpenSSH sshd on a free port of 127.0.0.1: its own host key, one authorized user key (the tests run as
 * root), `internal-sftp`, no passwords. A child process, stopped by stop().
 */
export async function startSftp(): Promise<TestSftp> {
  const dir = mkdtempSync(join(tmpdir(), "dbkeep-sshd-"));
  const keygen = (file: string) => {
    const r = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "dbkeep-test", "-f", file], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  };
  keygen(join(dir, "host_key"));
  keygen(join(dir, "user_key"));
  writeFileSync(join(dir, "authorized_keys"), readFileSync(join(dir, "user_key.pub")), { mode: 0o600 });
  const port = await freePort();
  writeFileSync(
    join(dir, "known_hosts"),
    `[127.0.0.1]:${port} ${readFileSync(join(dir, "host_key.pub"), "utf8").split(" ").slice(0, 2).join(" ")}\n`,
  );
  writeFileSync(
    join(dir, "sshd_config"),
    [
      "ListenAddress 127.0.0.1",
      `HostKey ${join(dir, "host_key")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      "PidFile none",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "StrictModes no",
      "UsePAM no",
      "Subsystem sftp internal-sftp",
      "LogLevel ERROR",
      "",
    ].join("\n"),
  );
  // sshd refuses to start without its privilege separation directory (the Debian package creates it at boot).
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const files = join(dir, "files");
  mkdirSync(files);
  const child = spawn("/usr/sbin/sshd", ["-f", join(dir, "sshd_config"), "-D", "-e", "-p", String(port)], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`sshd exited with code ${child.exitCode}: ${stderr}`);
    if (await banner(port)) break;
    if (i > 100) {
      child.kill("SIGKILL");
      throw new Error(`sshd did not answer on 127.0.0.1:${port} within 10 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    dir: files,
    env: {
      RCLONE_CONFIG_SFT_TYPE: "sftp",
      RCLONE_CONFIG_SFT_HOST: "127.0.0.1",
      RCLONE_CONFIG_SFT_PORT: String(port),
      RCLONE_CONFIG_SFT_USER: "root",
      RCLONE_CONFIG_SFT_KEY_FILE: join(dir, "user_key"),
      RCLONE_CONFIG_SFT_KNOWN_HOSTS_FILE: join(dir, "known_hosts"),
      // No remote commands (hash sums, shell detection): an sftp-only account allows none, and each costs a session.
      RCLONE_CONFIG_SFT_SHELL_TYPE: "none",
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Whether an SSH server greets on the port. */
function banner(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once("data", (d: Buffer) => done(d.toString().startsWith("SSH-")));
    s.once("error", () => done(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
