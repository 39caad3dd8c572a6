import { spawnSync } from "node:child_process";
import type { TestProject } from "vitest/node";
import { ROOT } from "../helpers/env.js";

/**
 * Builds deploy/Dockerfile once per run (scripts/test-container.sh build: podman's layer cache makes a rebuild of
 * unchanged layers quick) and hands the image's name to the test files. Where no container can be built, the tests
 * are skipped with the reason, except under CI=true, where that is a failure.
 */
export default function setup(project: TestProject): void {
  const started = Date.now();
  const r = spawnSync("bash", ["scripts/test-container.sh", "build"], { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 40 * 60_000 });
  const image = r.status === 0 ? r.stdout.trim().split("\n").pop() ?? "" : "";
  process.stderr.write(r.stderr);
  if (!image) {
    const reason = `the image could not be built (scripts/test-container.sh build exited ${r.status ?? r.signal}): ${r.stderr.trim().split("\n").slice(-3).join(" / ")}`;
    if (process.env.CI === "true" || process.env.CI === "1") throw new Error(`container tests cannot run under CI: ${reason}`);
    process.stderr.write(`[test-container] the container tests are skipped: ${reason}\n`);
    project.provide("dbkeepImage", "");
    project.provide("containerUnavailable", reason);
    return;
  }
  process.stderr.write(`[test-container] image ${image} ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  project.provide("dbkeepImage", image);
  project.provide("containerUnavailable", "");
}
