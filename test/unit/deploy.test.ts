import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { configFromEnv } from "../../src/config/env.js";
import { parseConfig, validateConfig } from "../../src/config/load.js";
import { dbkeep, ROOT } from "../helpers/env.js";

// What can be checked of the deployment files without a container engine: every command, flag and variable they use
// exists in dbkeep, and every path and name they refer to exists in the image or in the files themselves.
// test/container/ builds the image and runs these files in it.
const read = (p: string) => readFileSync(join(ROOT, "deploy", p), "utf8");

/** Every variable name docs/environment.md documents (written `NAME` in its tables and text). */
const DOCUMENTED = new Set([...readFileSync(join(ROOT, "docs/environment.md"), "utf8").matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!));

/** The image's facts, read from deploy/Dockerfile's final stage. */
const dockerfile = read("Dockerfile");
const finalStage = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
const IMAGE_VOLUMES = JSON.parse(/^VOLUME (\[.*\])$/m.exec(finalStage)![1]!) as string[];
const IMAGE_UID = Number(/useradd --uid (\d+)/.exec(finalStage)![1]);
const IMAGE_PORT = Number(/^EXPOSE (\d+)$/m.exec(finalStage)![1]);

/** dbkeep's commands, as its --help lists them, and each command's options. */
const topHelp = dbkeep(["--help"]).stdout;
const commandsSection = topHelp.slice(topHelp.indexOf("Commands:")).split("\n\n")[0]!;
const COMMANDS = new Set([...commandsSection.matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!));
function optionsOf(command: string): Set<string> {
  const r = dbkeep([command, "--help"]);
  expect(r.code, r.stderr).toBe(0);
  return new Set([...r.stdout.matchAll(/(--[a-z][a-z-]*)/g)].map((m) => m[1]!));
}

/** Checks an argument list as the image's entrypoint receives it: a known command, then only its known options. */
function expectCommand(args: string[], where: string): void {
  const [command, ...rest] = args;
  expect(COMMANDS.has(command!), `${where}: "${command}" is not a dbkeep command (${[...COMMANDS].join(", ")})`).toBe(true);
  const known = optionsOf(command!);
  for (const a of rest.filter((x) => x.startsWith("--"))) expect(known.has(a.split("=")[0]!), `${where}: ${command} has no option ${a}`).toBe(true);
}

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string; args?: Record<string, string> };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  secrets?: string[];
  ports?: string[];
}

describe("deployment files", () => {
  it("the image's facts are where the files expect them", () => {
    expect(IMAGE_VOLUMES.sort()).toEqual(["/backups", "/config", "/var/lib/dbkeep"]);
    expect(IMAGE_UID).toBe(10001);
    expect(IMAGE_PORT).toBe(9187);
    expect(COMMANDS.has("backup") && COMMANDS.has("daemon") && COMMANDS.has("restore")).toBe(true);
    expect(COMMANDS.has("dbkeep")).toBe(false);
  });

  for (const file of ["compose/postgres.yaml", "compose/mariadb.yaml", "compose/redis.yaml"]) {
    it(`${file}: the image from deploy/Dockerfile, a dbkeep command, documented variables, a valid sidecar configuration`, () => {
      const doc = parse(read(file)) as { services: Record<string, ComposeService>; secrets?: Record<string, unknown>; volumes?: Record<string, unknown> };
      const backup = doc.services.backup!;
      expect(backup.image).toBe("dbkeep:latest");
      expect(backup.build?.dockerfile).toBe("deploy/Dockerfile");
      expect(existsSync(join(ROOT, "deploy/compose", backup.build!.context, backup.build!.dockerfile))).toBe(true);
      for (const arg of Object.keys(backup.build?.args ?? {})) expect(dockerfile, `build arg ${arg}`).toMatch(new RegExp(`^ARG ${arg}[=\\s]`, "m"));
      expectCommand(backup.command ?? ["daemon"], file);
      const env = backup.environment ?? {};
      for (const name of Object.keys(env)) expect(DOCUMENTED.has(name), `${file}: ${name} is not in docs/environment.md`).toBe(true);
      const { raw } = configFromEnv(env);
      const cfg = validateConfig(raw, file);
      expect(Object.keys(cfg.jobs)).toEqual(["backup"]);
      // Volumes go to the image's volumes; secrets and named volumes are declared.
      for (const v of backup.volumes ?? []) {
        const [name, path] = v.split(":");
        expect(IMAGE_VOLUMES, `${file}: ${v}`).toContain(path);
        expect(doc.volumes ?? {}, `${file}: volume ${name}`).toHaveProperty(name!);
      }
      for (const s of backup.secrets ?? []) expect(doc.secrets ?? {}, `${file}: secret ${s}`).toHaveProperty(s);
      for (const [k, v] of Object.entries(env)) if (k.endsWith("_FILE")) expect(backup.secrets?.map((s) => `/run/secrets/${s}`), `${file}: ${k}`).toContain(v);
      for (const p of backup.ports ?? []) expect(p.split(":").pop()).toBe(String(IMAGE_PORT));
    });
  }

  describe("kubernetes/", () => {
    interface Mount { name: string; mountPath: string; readOnly?: boolean }
    interface Container { image: string; args: string[]; env?: { name: string; value: string }[]; volumeMounts: Mount[]; ports?: { name: string; containerPort: number }[]; livenessProbe?: { httpGet: { path: string; port: string } }; readinessProbe?: { httpGet: { path: string; port: string } } }
    interface PodSpec { securityContext: { runAsUser: number; runAsGroup: number; fsGroup: number }; containers: Container[]; volumes: { name: string; configMap?: { name: string }; secret?: { secretName: string; defaultMode: number }; persistentVolumeClaim?: { claimName: string }; emptyDir?: object }[] }
    type K8s = { kind: string; metadata: { name: string }; data?: Record<string, string>; stringData?: Record<string, string>; spec: Record<string, unknown> };
    // Kubernetes reads YAML 1.1: 0440 is octal there.
    const docs = (f: string) => parseAllDocuments(read(f), { version: "1.1" }).map((d) => d.toJS() as K8s);
    const config = docs("kubernetes/config.yaml");
    const byKind = (kind: string) => config.filter((d) => d.kind === kind);

    it("config.yaml: a ConfigMap whose dbkeep.yaml is a valid config, the Secret it reads, the claims", () => {
      expect(config.map((d) => d.kind)).toEqual(["ConfigMap", "Secret", "PersistentVolumeClaim", "PersistentVolumeClaim"]);
      const cfg = parseConfig(byKind("ConfigMap")[0]!.data!["dbkeep.yaml"]!);
      expect(cfg.jobs.app).toMatchObject({ verify: true, schedule: "0 2 * * *", prune_schedule: "30 3 * * *" });
      expect(cfg.stores.backups!.options.path).toBe("/backups");
      const passwordFile = String(cfg.datasources.app!.options.password_file);
      expect(passwordFile.startsWith("/run/secrets/dbkeep/")).toBe(true);
      expect(byKind("Secret")[0]!.stringData).toHaveProperty(passwordFile.split("/").pop()!);
    });

    for (const [file, kind] of [["kubernetes/cronjob.yaml", "CronJob"], ["kubernetes/deployment.yaml", "Deployment"]] as const) {
      it(`${file}: a ${kind} that runs a dbkeep command as the image's user, with the config, the secret and the image's volumes mounted`, () => {
        const d = docs(file).find((x) => x.kind === kind)!;
        const pod = (kind === "CronJob" ? (d.spec as { jobTemplate: { spec: { template: { spec: PodSpec } } } }).jobTemplate.spec.template.spec : (d.spec as { template: { spec: PodSpec } }).template.spec);
        expect(pod.securityContext).toMatchObject({ runAsUser: IMAGE_UID, runAsGroup: IMAGE_UID, fsGroup: IMAGE_UID });
        const c = pod.containers[0]!;
        expect(c.image).toBe("dbkeep:latest");
        expectCommand(c.args, file);
        for (const e of c.env ?? []) expect(DOCUMENTED.has(e.name), `${file}: ${e.name}`).toBe(true);
        const volumes = new Map(pod.volumes.map((v) => [v.name, v]));
        for (const m of c.volumeMounts) {
          const v = volumes.get(m.name);
          expect(v, `${file}: volume ${m.name}`).toBeDefined();
          if (v!.configMap) {
            // The image finds /config/dbkeep.yaml by itself.
            expect(m.mountPath).toBe("/config");
            expect(byKind("ConfigMap").map((x) => x.metadata.name)).toContain(v!.configMap.name);
            expect(Object.keys(byKind("ConfigMap")[0]!.data!)).toContain("dbkeep.yaml");
          } else if (v!.secret) {
            expect(byKind("Secret").map((x) => x.metadata.name)).toContain(v!.secret.secretName);
            // Group-readable: the files belong to root and fsGroup, and the image's user is in that group only.
            expect(v!.secret.defaultMode & 0o040).toBe(0o040);
            expect(m.mountPath).toBe("/run/secrets/dbkeep");
          } else if (v!.persistentVolumeClaim) {
            expect(byKind("PersistentVolumeClaim").map((x) => x.metadata.name)).toContain(v!.persistentVolumeClaim.claimName);
            expect(IMAGE_VOLUMES).toContain(m.mountPath);
          } else {
            expect([...IMAGE_VOLUMES, "/tmp"]).toContain(m.mountPath);
          }
        }
        if (kind === "Deployment") {
          expect(c.args).toEqual(["daemon"]);
          expect(c.ports).toEqual([{ name: "http", containerPort: IMAGE_PORT }]);
          expect(c.livenessProbe?.httpGet).toEqual({ path: "/healthz", port: "http" });
          expect(c.readinessProbe?.httpGet).toEqual({ path: "/readyz", port: "http" });
          expect(c.env).toContainEqual({ name: "DBKEEP_LISTEN", value: `0.0.0.0:${IMAGE_PORT}` });
          expect((d.spec as { replicas: number; strategy: { type: string } }).replicas).toBe(1);
          expect((d.spec as { strategy: { type: string } }).strategy.type).toBe("Recreate");
        } else {
          expect(c.args).toEqual(["backup", "--all", "--prune"]);
          expect((d.spec as { concurrencyPolicy: string }).concurrencyPolicy).toBe("Forbid");
        }
      });
    }
  });

  it("Dockerfile: known instructions, multi-stage, a non-root user, the build arguments, and what it copies exists", () => {
    const logical = dockerfile.replace(/\\\n/g, " ").split("\n").filter((l) => l.trim() && !l.trim().startsWith("#"));
    const known = new Set(["FROM", "ARG", "RUN", "COPY", "WORKDIR", "ENV", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL"]);
    for (const l of logical) expect(known.has(l.trim().split(/\s+/)[0]!), l).toBe(true);
    expect(logical.filter((l) => l.startsWith("FROM")).length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^ARG BASE_IMAGE=node:20-bookworm-slim$/m);
    expect(dockerfile).toMatch(/^ARG PG_SOURCE=pgdg$/m);
    expect(dockerfile).toMatch(/^ARG PG_VERSIONS="17"$/m);
    expect(finalStage).toMatch(/^USER dbkeep$/m);
    expect(finalStage).toMatch(/^ENTRYPOINT \["dbkeep"\]$/m);
    expect(logical.find((l) => l.startsWith("HEALTHCHECK "))).toMatch(/CMD .*\/healthz/);
    for (const l of logical.filter((x) => x.startsWith("COPY ") && !x.includes("--from"))) {
      for (const src of l.trim().split(/\s+/).slice(1, -1)) expect(existsSync(join(ROOT, src)), src).toBe(true);
    }
    // Everything the image copies from the context passes the ignore file.
    const ignore = readFileSync(join(ROOT, "deploy/Dockerfile.dockerignore"), "utf8");
    for (const l of logical.filter((x) => x.startsWith("COPY ") && !x.includes("--from"))) {
      for (const src of l.trim().split(/\s+/).slice(1, -1)) expect(ignore, src).toContain(`!${src.replace(/\/$/, "")}`);
    }
    // The entrypoint runs the program package.json names, built by the same script.
    const bin = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { bin: { dbkeep: string } }).bin.dbkeep;
    expect(read("dbkeep.sh")).toContain(`exec node /opt/dbkeep/${bin} "$@"`);
    expect(dockerfile).toMatch(/npm run build/);
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
