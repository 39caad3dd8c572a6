import type { Reporter, TestModule } from "vitest/node";

/**
 * Closes the run with one plain line, `N passed, N failed, N skipped`, and names every skipped test with its
 * reason, so what was not verified on this machine is visible in every test log.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const skips: string[] = [];
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const r = t.result();
        if (r.state === "passed") passed++;
        else if (r.state === "failed") failed++;
        else {
          skipped++;
          skips.push(`  skipped: ${t.fullName}${r.state === "skipped" && r.note ? ` (${r.note})` : ""}`);
        }
      }
      // An error outside any test (a failing beforeAll, an import error) fails the file even if no test failed.
      if (m.state() === "failed" && ![...m.children.allTests()].some((t) => t.result().state === "failed")) {
        failed++;
        skips.push(`  failed: ${m.moduleId} (error outside a test)`);
      }
    }
    // An unhandled error fails the run even when every test passed.
    for (const e of unhandledErrors) {
      failed++;
      skips.push(`  failed: unhandled error ${(e as { message?: string }).message ?? String(e)}`);
    }
    const out = [...skips, `${passed} passed, ${failed} failed, ${skipped} skipped`];
    process.stdout.write(`\n${out.join("\n")}\n`);
  }
}
