import { defineConfig } from "vitest/config";

// The container group (test/container): deploy/Dockerfile built once per run by the global setup, then run with
// podman against the servers on this machine. `npm test` runs it after the main suite; `npm run test:container`
// runs it alone.
export default defineConfig({
  test: {
    include: ["test/container/**/*.test.ts"],
    globalSetup: ["test/container/global-setup.ts"],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: "forks",
    maxWorkers: 2,
    reporters: ["default", "./test/summary-reporter.ts"],
  },
});
