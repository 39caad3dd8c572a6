import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { configFromEnv } from "../../src/config/env.js";
import { parseConfig, validateConfig } from "../../src/config/load.js";
import { ROOT } from "../helpers/env.js";

// No container engine runs on the test machines: these files are checked for what can be checked without one.
const read = (p: string) => readFileSync(join(ROOT, "deploy", p), "utf8");

describe("deployment files", () => {
  for (const file of ["compose/postgres.yaml", "compose/mariadb.yaml", "compose/redis.yaml"]) {
    it(`${file}: parses, and its sidecar environment is a valid dbkeep configuration`, () => {
      const doc = parse(read(file)) as { services: Record<string, { environment?: Record<string, string>; build?: { dockerfile: string } }> };
      const backup = doc.services.backup!;
      expect(backup.build?.dockerfile).toBe("deploy/Dockerfile");
      const { raw } = configFromEnv(backup.environment ?? {});
      const cfg = validateConfig(raw, file);
      expect(Object.keys(cfg.jobs)).toEqual(["backup"]);
    });
  }

  it("kubernetes/cronjob.yaml: both documents parse, the ConfigMap holds a valid config, the CronJob runs `backup`", () => {
    interface ConfigMap { kind: string; data: Record<string, string> }
    interface CronJob { kind: string; spec: { concurrencyPolicy: string; jobTemplate: { spec: { template: { spec: { containers: { args: string[] }[] } } } } } }
    const [configMap, cronJob] = parseAllDocuments(read("kubernetes/cronjob.yaml")).map((d) => d.toJS()) as [ConfigMap, CronJob];
    expect([configMap.kind, cronJob.kind]).toEqual(["ConfigMap", "CronJob"]);
    const cfg = parseConfig(configMap.data["dbkeep.yaml"]!);
    expect(cfg.jobs.app?.verify).toBe(true);
    expect(cronJob.spec.jobTemplate.spec.template.spec.containers[0]?.args).toEqual(["-c", "/config/dbkeep.yaml", "backup", "app", "--prune"]);
    expect(cronJob.spec.concurrencyPolicy).toBe("Forbid");
  });

  it("Dockerfile: known instructions, two stages, a non-root user, and what it copies exists", () => {
    const text = read("Dockerfile");
    const logical = text.replace(/\\\n/g, " ").split("\n").filter((l) => l.trim() && !l.trim().startsWith("#"));
    const known = new Set(["FROM", "ARG", "RUN", "COPY", "WORKDIR", "ENV", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL"]);
    for (const l of logical) expect(known.has(l.trim().split(/\s+/)[0]!), l).toBe(true);
    expect(logical.filter((l) => l.startsWith("FROM"))).toHaveLength(2);
    expect(text).toMatch(/^USER dbkeep$/m);
    expect(text).toContain('ARG PG_VERSIONS="17"');
    for (const l of logical.filter((x) => x.startsWith("COPY ") && !x.includes("--from"))) {
      for (const src of l.trim().split(/\s+/).slice(1, -1)) expect(existsSync(join(ROOT, src)), src).toBe(true);
    }
    // The image's dbkeep command is the program package.json names, built by the same script.
    const bin = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { bin: { dbkeep: string } }).bin.dbkeep;
    expect(text).toContain(`ln -s /opt/dbkeep/${bin} /usr/local/bin/dbkeep`);
    expect(text).toMatch(/npm run build/);
  });

  it("systemd/dbkeep.service: sections, the daemon command, reload by SIGHUP", () => {
    const text = read("systemd/dbkeep.service");
    const sections = [...text.matchAll(/^\[(\w+)\]$/gm)].map((m) => m[1]);
    expect(sections).toEqual(["Unit", "Service", "Install"]);
    expect(text).toMatch(/^ExecStart=\/usr\/local\/bin\/dbkeep daemon$/m);
    expect(text).toMatch(/^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    expect(text).toMatch(/^User=dbkeep$/m);
  });
});
