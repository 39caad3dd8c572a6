#!/usr/bin/env node
import { Command, CommanderError, Option } from "commander";
import { DbkeepError, formatError, toDbkeepError } from "../core/errors.js";
import { redact } from "../core/redact.js";
import { VERSION } from "../core/version.js";
import { registerBackup } from "./commands/backup.js";
import { registerConfig } from "./commands/config.js";
import { registerDaemon } from "./commands/daemon.js";
import { registerDoctor } from "./commands/doctor.js";
import { registerQuery } from "./commands/query.js";
import { registerConsole } from "./commands/console.js";
import { registerCatalog } from "./commands/catalog.js";
import { registerHistory } from "./commands/history.js";
import { registerImport } from "./commands/import.js";
import { registerCrypt } from "./commands/crypt.js";
import { registerList } from "./commands/list.js";
import { registerNotify } from "./commands/notify.js";
import { registerPrune } from "./commands/prune.js";
import { registerRepair } from "./commands/repair.js";
import { registerRestore } from "./commands/restore.js";
import { registerVerify } from "./commands/verify.js";
import { registerDownload } from "./commands/download.js";
import { registerStatus } from "./commands/status.js";
import { registerStores } from "./commands/stores.js";
import { registerSync } from "./commands/sync.js";
import { registerSeed001 } from "./commands/seed001.js";
import { registerSeed003 } from "./commands/seed003.js";
import { Context, DEFAULT_SHUTDOWN_SECONDS, type GlobalOptions } from "./context.js";
import { dbvaultArgv } from "./seed002.js";

/** The only place that decides exit codes: 0 ok, 1 a job or operation failed, 2 usage or config error. */
async function main(argv: string[]): Promise<number> {
  const abort = new AbortController();
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    const code = sig === "SIGINT" ? 130 : 143;
    if (interrupted) process.exit(code); // second signal: stop now
    interrupted = sig;
    if (!context?.handlesSignals) process.stderr.write(`\n${sig}: stopping, cleaning up...\n`);
    abort.abort(new DbkeepError("ABORTED", `interrupted by ${sig}`));
    // The grace period: a command that has not stopped by then (a tool that ignores its cancellation, a cleanup that
    // hangs on a dead server) is ended, so that a supervisor's SIGTERM always ends dbkeep.
    const seconds = context?.shutdownSeconds ?? DEFAULT_SHUTDOWN_SECONDS;
    setTimeout(() => {
      process.stderr.write(`${sig}: not stopped ${seconds}s after the signal; exiting now\n`);
      process.exit(code);
    }, seconds * 1000).unref();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  let context: Context | undefined;
  const program = new Command("dbkeep")
    .description("Database backups: streaming, compressed, checksummed, verified.")
    .version(VERSION, "-V, --version")
    .option("-c, --config <file>", "config file (default: $DBKEEP_CONFIG or ./dbkeep.yaml)")
    .addOption(new Option("--log-format <format>", "log lines as text or json (default: text on a TTY, json otherwise)").choices(["text", "json"]))
    .option("-q, --quiet", "only warnings and errors")
    .option("--debug", "debug logs and stack traces")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .addHelpText(
      "after",
      `
Examples:
  dbkeep backup sqlite:./examples/app.db --to ./backups
  dbkeep list ./backups
  dbkeep restore ./backups latest --to sqlite:./restored.db
  dbkeep keygen -o key.txt && dbkeep backup sqlite:./app.db --to ./backups -r age1...
  dbkeep -c dbkeep.yaml backup --all --parallel 2 --prune
  dbkeep config check

Exit codes: 0 success, 1 a job or operation failed, 2 usage or config error.`,
    );
  const ctx = () => (context ??= new Context(program.opts<GlobalOptions>(), abort.signal));
  registerBackup(program, ctx);
  registerList(program, ctx);
  registerRestore(program, ctx);
  registerVerify(program, ctx);
  registerPrune(program, ctx);
  registerRepair(program, ctx);
  registerStatus(program, ctx);
  registerSync(program, ctx);
  registerDownload(program, ctx);
  registerImport(program, ctx);
  registerStores(program, ctx);
  registerConfig(program, ctx);
  registerDaemon(program, ctx);
  registerHistory(program, ctx);
  registerCrypt(program, ctx);
  registerNotify(program, ctx);
  registerDoctor(program, ctx);
  registerQuery(program, ctx);
  registerConsole(program, ctx);
  registerSeed001(program, ctx);
  registerSeed003(program, ctx);
  registerCatalog(program, ctx);
  for (const cmd of program.commands) cmd.exitOverride().showHelpAfterError("(run with --help for usage)");

  try {
    await program.parseAsync(dbvaultArgv(argv));
    if (interrupted && !context?.handlesSignals) return interrupted === "SIGINT" ? 130 : 143;
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.code === "commander.help") return 0;
      return 2;
    }
    const e = toDbkeepError(err);
    if (interrupted && e.code === "ABORTED") {
      process.stderr.write(`error: interrupted by ${interrupted}; nothing half-written was left visible\n`);
      return interrupted === "SIGINT" ? 130 : 143;
    }
    const debug = process.argv.includes("--debug");
    process.stderr.write(redact(formatError(e)) + "\n");
    if (debug && e.stack) process.stderr.write(redact(e.stack) + "\n");
    return e.exitCode;
  }
}

/**
 * Ends the process once everything written to stdout and stderr has been taken by the reader. Writes to a pipe are
 * asynchronous: process.exit() right away would drop whatever the pipe (64 KiB on Linux) could not take yet, and
 * `dbkeep list --json | jq` would get cut JSON. Exiting explicitly, not by letting the event loop run dry, also ends
 * the commands that leave a handle open (a pool's idle timer, a keep-alive socket of an SDK).
 */
function finish(code: number): void {
  process.exitCode = code;
  let pending = 2;
  const done = () => {
    if (--pending === 0) process.exit(code);
  };
  for (const stream of [process.stdout, process.stderr]) {
    // A reader that went away (`| head`) cannot be waited for: its EPIPE ends the wait, and the exit code stays.
    if (stream.destroyed || stream.writableEnded) done();
    else stream.write("", () => done());
  }
}

// A reader that closes the pipe early (`dbkeep list --json | head -1`) is not an error of dbkeep's.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
    stream.destroy();
  });
}

main(process.argv).then(finish, (err: unknown) => {
  process.stderr.write(`internal error: ${redact(String(err))}\n`);
  finish(1);
});
