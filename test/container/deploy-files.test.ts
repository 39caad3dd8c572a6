import { chmodSync, chownSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse, parseAllDocuments, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pgAvailable, pgQuery, ROOT, tempDir } from "../helpers/env.js";
import { myAvailable, myQuery } from "../helpers/mysql.js";
import { freePort } from "../helpers/redis.js";
import { httpGet, IMAGE_UID, podman, removeContainers, RUN_ID, run, sh, UNAVAILABLE, until, volumeDir } from "./podman.js";

// deploy/compose and deploy/kubernetes, rendered for this machine (the database's host, user and name replaced by
// the local server's, the orchestrator's volumes by host directories) and run in the image built for this run.
const DB = `dbkeepcd${RUN_ID}`;
const MYUSER = `dbkeepcd${RUN_ID}`;
const SECRET = "deploy-files-secret";

const pgUp = !UNAVAILABLE && (await pgAvailable());
const myUp = !UNAVAILABLE && (await myAvailable());

interface ComposeService {
  command?: string[];
  environment?: Record<string, string>;
  secrets?: string[];
}

const compose = (file: string) => (parse(readFileSync(join(ROOT, "deploy/compose", file), "utf8")) as { services: { backup: ComposeService } }).services.backup;

interface Checked {
  datasources: Record<string, Record<string, unknown>>;
  jobs: Record<string, { schedule?: string; every?: number | string; retention?: Record<string, number>; compression?: string }>;
}

describe.skipIf(!pgUp || !myUp)("deploy/compose: each sidecar's environment, as the file gives it, in the image", () => {
  let secretFile: string;

  beforeAll(async () => {
    const dir = tempDir("dbkeep-ctrd-");
    secretFile = join(dir, "db_password.txt");
    // As compose mounts a file secret: the file itself, readable by the image's user.
    writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o644 });
    await pgQuery("postgres", `CREATE DATABASE "${DB}"`);
    await pgQuery(DB, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)");
    await myQuery(`CREATE DATABASE ${DB}`);
    await myQuery("CREATE TABLE t (id INT PRIMARY KEY)", DB);
    for (const host of ["localhost", "127.0.0.1"]) {
      await myQuery(`CREATE USER '${MYUSER}'@'${host}' IDENTIFIED BY '${SECRET}'`);
      await myQuery(`GRANT ALL PRIVILEGES ON \`${DB}\`.* TO '${MYUSER}'@'${host}'`);
    }
  });

  afterAll(async () => {
    if (pgUp) await pgQuery("postgres", `DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`);
    if (myUp) {
      await myQuery(`DROP DATABASE IF EXISTS ${DB}`);
      for (const host of ["localhost", "127.0.0.1"]) await myQuery(`DROP USER IF EXISTS '${MYUSER}'@'${host}'`);
    }
  });

  // The connection variables that point at the compose project's database service, replaced by this machine's.
  const local: Record<string, Record<string, string>> = {
    "postgres.yaml": { PGHOST: "127.0.0.1", PGUSER: "postgres", PGDATABASE: DB },
    "mariadb.yaml": { MYSQL_HOST: "127.0.0.1", MYSQL_USER: MYUSER, MYSQL_DATABASE: DB },
    "redis.yaml": { DBKEEP_SOURCE: "redis://127.0.0.1:6379/0?mode=logical" },
  };

  for (const file of ["postgres.yaml", "mariadb.yaml", "redis.yaml"]) {
    it(`${file}: config check reads the file's schedule and retention; one backup with that environment lands in /backups`, () => {
      const svc = compose(file);
      const env = { ...svc.environment, ...local[file] };
      const volumes = (svc.secrets ?? []).map((s) => `${secretFile}:/run/secrets/${s}:ro`);
      const checked = run(["config", "check", "--json"], { env, volumes });
      expect(checked.code, checked.stderr).toBe(0);
      const job = (JSON.parse(checked.stdout) as Checked).jobs.backup!;
      const fileEnv = svc.environment!;
      if (fileEnv.DBKEEP_SCHEDULE) expect(job.schedule).toBe(fileEnv.DBKEEP_SCHEDULE);
      if (fileEnv.BACKUP_INTERVAL_SECONDS) expect(Number(job.every)).toBe(Number(fileEnv.BACKUP_INTERVAL_SECONDS));
      if (fileEnv.KEEP_DAILY) expect(job.retention?.keep_daily).toBe(Number(fileEnv.KEEP_DAILY));
      if (fileEnv.KEEP_LAST) expect(job.retention?.keep_last).toBe(Number(fileEnv.KEEP_LAST));

      const backups = volumeDir("dbkeep-ctrd-backups-");
      const b = run(["backup", "--all", "--prune"], { env, volumes: [...volumes, `${backups}:/backups`] });
      expect(b.code, b.stderr).toBe(0);
      expect(b.stderr).not.toContain(SECRET);
      const l = run(["list", "backup", "--json"], { env, volumes: [...volumes, `${backups}:/backups`] });
      expect(l.code, l.stderr).toBe(0);
      expect((JSON.parse(l.stdout) as { backups: unknown[] }).backups).toHaveLength(1);
    });
  }
});

interface Mount { name: string; mountPath: string; readOnly?: boolean }
interface Container { args: string[]; env?: { name: string; value: string }[]; volumeMounts: Mount[]; ports?: { name: string; containerPort: number }[]; livenessProbe: { httpGet: { path: string } }; readinessProbe: { httpGet: { path: string } }; securityContext: { readOnlyRootFilesystem?: boolean } }
interface PodSpec { securityContext: { runAsUser: number; runAsGroup: number }; containers: Container[]; volumes: { name: string; configMap?: object; secret?: { defaultMode: number }; persistentVolumeClaim?: object; emptyDir?: object }[] }
type K8s = { kind: string; data?: Record<string, string>; stringData?: Record<string, string>; spec: Record<string, unknown> };
const k8s = (file: string) => parseAllDocuments(readFileSync(join(ROOT, "deploy/kubernetes", file), "utf8"), { version: "1.1" }).map((d) => d.toJS() as K8s);

describe.skipIf(!pgUp)("deploy/kubernetes: the CronJob and the Deployment, rendered as podman runs of the image", () => {
  let dirs: { config: string; secrets: string; backups: string };

  /** The pod spec as `podman run` options: its user, read-only root, and each volume as a host directory. */
  function podArgs(pod: PodSpec, c: Container, state: string): { volumes: string[]; extra: string[] } {
    const byName = new Map(pod.volumes.map((v) => [v.name, v]));
    const volumes: string[] = [];
    const extra = ["--user", `${pod.securityContext.runAsUser}:${pod.securityContext.runAsGroup}`];
    if (c.securityContext.readOnlyRootFilesystem) extra.push("--read-only");
    for (const m of c.volumeMounts) {
      const v = byName.get(m.name)!;
      if (v.configMap) volumes.push(`${dirs.config}:${m.mountPath}:ro`);
      else if (v.secret) volumes.push(`${dirs.secrets}:${m.mountPath}:ro`);
      else if (v.persistentVolumeClaim && m.mountPath === "/backups") volumes.push(`${dirs.backups}:${m.mountPath}`);
      else if (m.mountPath === "/tmp") extra.push("--tmpfs", "/tmp");
      else volumes.push(`${state}:${m.mountPath}`);
    }
    return { volumes, extra };
  }

  beforeAll(async () => {
    await pgQuery("postgres", `CREATE DATABASE "${DB}k"`);
    await pgQuery(`${DB}k`, "CREATE TABLE orders (id int PRIMARY KEY, total numeric); INSERT INTO orders SELECT g, g * 2.5 FROM generate_series(1, 500) g");
    const docs = k8s("config.yaml");
    // The ConfigMap's dbkeep.yaml, with the database service replaced by this machine's server.
    const cfg = parse(docs.find((d) => d.kind === "ConfigMap")!.data!["dbkeep.yaml"]!) as { datasources: Record<string, Record<string, unknown>> };
    Object.assign(cfg.datasources.app!, { host: "127.0.0.1", user: "postgres", database: `${DB}k` });
    dirs = { config: tempDir("dbkeep-ctrk-config-"), secrets: tempDir("dbkeep-ctrk-secrets-"), backups: volumeDir("dbkeep-ctrk-backups-") };
    writeFileSync(join(dirs.config, "dbkeep.yaml"), stringify(cfg), { mode: 0o644 });
    // A Secret volume: root's files, group fsGroup, mode defaultMode.
    const secret = docs.find((d) => d.kind === "Secret")!;
    const mode = (k8s("cronjob.yaml")[0]!.spec as { jobTemplate: { spec: { template: { spec: PodSpec } } } }).jobTemplate.spec.template.spec.volumes.find((v) => v.secret)!.secret!.defaultMode;
    for (const [k, v] of Object.entries(secret.stringData!)) {
      writeFileSync(join(dirs.secrets, k), v, { mode });
      chownSync(join(dirs.secrets, k), 0, IMAGE_UID);
    }
    // A ConfigMap volume is readable by everyone, a Secret volume by the pod's fsGroup.
    chmodSync(dirs.config, 0o755);
    chownSync(dirs.secrets, 0, IMAGE_UID);
    chmodSync(dirs.secrets, 0o750);
  });

  afterAll(async () => {
    if (pgUp) await pgQuery("postgres", `DROP DATABASE IF EXISTS "${DB}k" WITH (FORCE)`);
  });

  it("cronjob.yaml: its args, twice, under the pod's security context: a verified backup each time, keep_daily leaves the newest", async () => {
    const cron = k8s("cronjob.yaml").find((d) => d.kind === "CronJob")!;
    const pod = (cron.spec as { jobTemplate: { spec: { template: { spec: PodSpec } } } }).jobTemplate.spec.template.spec;
    const c = pod.containers[0]!;
    const state = volumeDir("dbkeep-ctrk-state-");
    const o = podArgs(pod, c, state);
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      if (i) await new Promise((r) => setTimeout(r, 1100));
      const r = run(c.args, o);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/verif/i);
      const l = run(["list", "app", "--json"], o);
      expect(l.code, l.stderr).toBe(0);
      const backups = (JSON.parse(l.stdout) as { backups: { id: string }[] }).backups;
      ids.push(backups.at(-1)!.id);
      // One backup per day is kept for 7 days: the second run of the day replaces the first.
      expect(backups).toHaveLength(1);
    }
    expect(ids[1]).not.toBe(ids[0]);
  });

  it("deployment.yaml: the daemon under the pod's security context answers the liveness and readiness probes, and stops on SIGTERM with 0", async () => {
    const dep = k8s("deployment.yaml").find((d) => d.kind === "Deployment")!;
    const pod = (dep.spec as { template: { spec: PodSpec } }).template.spec;
    const c = pod.containers[0]!;
    const state = volumeDir("dbkeep-ctrk-dstate-");
    const o = podArgs(pod, c, state);
    // The pod's own network has port 9187 to itself; on the host's, a free port stands in for it.
    const port = await freePort();
    const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
    expect(env.DBKEEP_LISTEN).toBe(`0.0.0.0:${c.ports![0]!.containerPort}`);
    env.DBKEEP_LISTEN = `127.0.0.1:${port}`;
    const name = `dbkeep-ctrk-${RUN_ID}`;
    try {
      const up = run(c.args, { ...o, env, detach: true, name });
      expect(up.code, up.stderr).toBe(0);
      for (const probe of [c.livenessProbe, c.readinessProbe]) {
        const status = await until(probe.httpGet.path, async () => {
          const r = await httpGet(`http://127.0.0.1:${port}${probe.httpGet.path}`);
          return r?.status === 200 ? r.status : undefined;
        });
        expect(status).toBe(200);
      }
      const metrics = (await httpGet(`http://127.0.0.1:${port}/metrics`))?.body ?? "";
      expect(metrics).toMatch(/dbkeep_job_next_run_timestamp_seconds\{job="app"\} \d+/);
      expect(podman(["stop", "-t", "60", name]).code).toBe(0);
      const state2 = JSON.parse(podman(["inspect", name, "--format", "{{json .State}}"]).stdout) as { ExitCode: number };
      expect(state2.ExitCode).toBe(0);
      // The history survives in the state volume, as the claim keeps it across restarts.
      expect(sh("ls /var/lib/dbkeep", { volumes: [`${state}:/var/lib/dbkeep`] }).stdout).toMatch(/history\.db/);
    } finally {
      removeContainers(name);
    }
  });
});
