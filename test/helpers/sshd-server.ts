import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { IN_CI } from "./env.js";
import { descendants } from "./proc.js";
import { freePort } from "./redis.js";

export const SSHD = "/usr/sbin/sshd";

/** Whether OpenSSH's server and ssh-keygen are installed; under CI their absence is a failure, not a skip. */
export function sshdAvailable(): boolean {
  const ok = existsSync(SSHD) && spawnSync("ssh-keygen", ["-?"]).error === undefined;
  if (!ok && IN_CI) throw new Error(`${SSHD} or ssh-keygen is not installed under CI (Debian package openssh-server)`);
  return ok;
}

export interface KeyPair {
  /** Private key file. */
  path: string;
  /** "ssh-ed25519 AAAA..." (the .pub file without its comment). */
  publicLine: string;
  /** As `ssh-keygen -lf` prints it: "SHA256:...". */
  fingerprint: string;
}

export function keygen(path: string, type = "ed25519", passphrase = ""): KeyPair {
  const r = spawnSync("ssh-keygen", ["-q", "-t", type, "-N", passphrase, "-C", "dbkeep-test", "-f", path], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  const pub = readFileSync(`${path}.pub`, "utf8").trim().split(/\s+/);
  const lf = spawnSync("ssh-keygen", ["-lf", `${path}.pub`], { encoding: "utf8" });
  if (lf.status !== 0) throw new Error(`ssh-keygen -lf failed: ${lf.stderr}`);
  return { path, publicLine: `${pub[0]} ${pub[1]}`, fingerprint: lf.stdout.split(/\s+/)[1]! };
}

export interface TestSshd {
  host: "127.0.0.1";
  port: number;
  /** Holds the config, keys and logs; `data` below it is where tests store files. */
  dir: string;
  data: string;
  user: string;
  hostKey: KeyPair;
  userKey: KeyPair;
  /** A known_hosts file with the server's key under `[127.0.0.1]:port`. */
  knownHosts: string;
  /** What sshd wrote to stderr (-e). */
  log(): string;
  /** SIGKILLs the processes serving connections (the listener keeps running). */
  killSessions(): number;
  /** SIGKILLs the listener and every session. */
  kill(): Promise<void>;
  /** Starts sshd again on the same port with the same keys and directory. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A private OpenSSH server on a free 127.0.0.1 port, with its own config, host key and authorized user key in a temp
 * dir, SFTP served by internal-sftp. Run in the foreground (-D) with logs on stderr (-e); sshd wants an absolute path
 * to itself (it re-executes itself per connection) and its privilege separation directory /run/sshd.
 */
export async function startSshd(o: { password?: boolean; sftpDenied?: string[] } = {}): Promise<TestSshd> {
  if (!existsSync("/run/sshd")) mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "dbkeep-sshd-"));
  const data = join(dir, "data");
  mkdirSync(data, { mode: 0o700 });
  const hostKey = keygen(join(dir, "host_ed25519"));
  const userKey = keygen(join(dir, "user_ed25519"));
  writeFileSync(join(dir, "authorized_keys"), `${userKey.publicLine}\n`, { mode: 0o600 });
  const knownHosts = join(dir, "known_hosts");
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostKey.publicLine}\n`, { mode: 0o600 });
  const user = userInfo().username;
  const config = join(dir, "sshd_config");
  writeFileSync(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey.path}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      "StrictModes no",
      `PermitRootLogin ${o.password ? "yes" : "prohibit-password"}`,
      `PasswordAuthentication ${o.password ? "yes" : "no"}`,
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "PrintMotd no",
      "MaxStartups 100",
      "MaxAuthTries 10",
      // sftpDenied: SFTP requests the server refuses, by sftp-server -Q requests names ("hardlink": as servers without it).
      `Subsystem sftp internal-sftp${o.sftpDenied?.length ? ` -P ${o.sftpDenied.join(",")}` : ""}`,
      "LogLevel VERBOSE",
      "",
    ].join("\n"),
  );

  let child: ChildProcess | undefined;
  let stderr = "";
  let exited: Promise<void> = Promise.resolve();

  async function start(): Promise<void> {
    const c = spawn(SSHD, ["-f", config, "-D", "-e"], { stdio: ["ignore", "ignore", "pipe"] });
    child = c;
    c.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    exited = new Promise<void>((r) => c.once("exit", () => r()));
    for (let i = 0; ; i++) {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`sshd exited: ${stderr}`);
      if (await banner(port)) return;
      if (i > 200) throw new Error(`sshd did not answer on 127.0.0.1:${port}: ${stderr}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  function killSessions(): number {
    if (!child?.pid) return 0;
    const procs = descendants(child.pid);
    for (const p of procs) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    return procs.length;
  }

  async function kill(): Promise<void> {
    killSessions();
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
  }

  await start();
  return {
    host: "127.0.0.1",
    port,
    dir,
    data,
    user,
    hostKey,
    userKey,
    knownHosts,
    log: () => stderr,
    killSessions,
    kill,
    async restart() {
      await kill();
      await start();
    },
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Whether something on the port greets like an SSH server. */
function banner(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once("data", (d: Buffer) => done(d.toString("latin1").startsWith("SSH-2.0-")));
    s.once("error", () => done(false));
  });
}
