import { existsSync } from "node:fs";

/**
 * FOR THE TEST SUITE ONLY: the crash drills (test/integration/postgres-restore-crash.test.ts) stop a restore at a
 * named step to kill it exactly there. With DBKEEP_TEST_PAUSE_AT=<step> the process writes
 * `dbkeep-test-pause: <step>` to stderr when it reaches that step and waits until it is cancelled (SIGTERM) or
 * until the file named by DBKEEP_TEST_RESUME_FILE exists. Unset, this is a no-op; nothing else reads these
 * variables and they are not part of dbkeep's interface.
 *
 * Steps: `restore:staging-created`, `restore:scratch-ready` (pg_restore -j only: the temp copy is complete, pg_restore
 * not started), `restore:before-swap`, `swap:before-commit` (inside the swap's transaction, both renames done),
 * `swap:after-commit` (before the replaced database is dropped).
 */
export async function pauseForTest(step: string, signal: AbortSignal): Promise<void> {
  if (process.env.DBKEEP_TEST_PAUSE_AT !== step) return;
  process.stderr.write(`dbkeep-test-pause: ${step}\n`);
  const resume = process.env.DBKEEP_TEST_RESUME_FILE;
  while (!signal.aborted && !(resume && existsSync(resume))) await new Promise((r) => setTimeout(r, 25));
}
