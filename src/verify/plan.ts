import { resolveSecret, type Section } from "../config/load.js";
import { DbkeepError } from "../core/errors.js";
import type { JobPlan } from "../core/jobs.js";
import { Secret } from "../core/redact.js";
import type { VerifySpec } from "./runner.js";
import { DEFAULT_VERIFICATION, type VerificationConfig } from "./settings.js";

const SERVER_ENGINES = new Set(["postgres", "postgresql", "mysql", "mariadb"]);
/** One-off (URL) mode: the password comes from the client tools' usual variable, as for backup and restore. */
const ENV_PASSWORD: Record<string, string> = { postgres: "PGPASSWORD", postgresql: "PGPASSWORD", mysql: "MYSQL_PWD", mariadb: "MYSQL_PWD" };

export function settingsOf(plan: Pick<JobPlan, "verification">): VerificationConfig {
  return plan.verification?.settings ?? DEFAULT_VERIFICATION;
}

/** A datasource section (config or URL) as the server a verification restores on. */
export function serverOf(section: Section & { engine: string }, path: string, oneOff: boolean, warn: (m: string) => void): VerifySpec["server"] {
  return {
    engine: section.engine,
    options: section.options,
    oneOff,
    secret: (f) => {
      const own = resolveSecret(section, f, path, warn);
      const variable = ENV_PASSWORD[section.engine];
      if (own || !oneOff || f !== "password" || !variable || !process.env[variable]) return own;
      return new Secret(process.env[variable]!);
    },
  };
}

/**
 * Where a job's backups are verified: verify_datasource when set; else the job's own server, unless the job's
 * verification block forbids that (allow_source_server: false) and no scratch cluster is configured.
 */
export function scratchServerFor(plan: Pick<JobPlan, "name" | "datasource" | "oneOff" | "verification">, engine: string, warn: (m: string) => void): VerifySpec["server"] {
  const settings = settingsOf(plan);
  const own = plan.verification?.datasource;
  if (own) return serverOf(own.section, own.path, false, warn);
  if (SERVER_ENGINES.has(engine) && !settings.scratch_cluster && !settings.allow_source_server) {
    throw new DbkeepError("USAGE", `job ${plan.name} does not allow scratch databases on its own server (verification.allow_source_server: false)`, {
      hint: "set verify_datasource to another server, or verification.scratch_cluster: true (PostgreSQL)",
    });
  }
  return serverOf(plan.datasource.section, plan.datasource.path, plan.oneOff, warn);
}
