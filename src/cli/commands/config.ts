import type { Command } from "commander";
import { ENCRYPTION_SECRETS, type Config, type Section } from "../../config/load.js";
import type { EncryptionConfig } from "../../config/schema.js";
import { maskUrlCredentials, redactUrlTail } from "../../core/redact.js";
import { isSecretEnvName } from "../../stores/child-env.js";
import type { Context } from "../context.js";

export function registerConfig(program: Command, ctx: () => Context): void {
  const config = program.command("config").description("inspect the configuration");
  config
    .command("check")
    .description("validate the config and print it as dbkeep reads it, secrets redacted")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep config check
  dbkeep -c /etc/dbkeep/dbkeep.yaml config check --json

Exit code 2 and every problem with its dotted path when the config is invalid.`,
    )
    .action(async (flags: { json?: boolean }) => {
      const { stringify } = await import("yaml");
      const c = ctx();
      const cfg = c.config();
      const doc = redacted(cfg);
      process.stdout.write(flags.json ? JSON.stringify(doc, null, 2) + "\n" : `# ${cfg.file ?? "config"}: valid\n${stringify(doc)}`);
    });
}

/** The config with literal secrets shown as *** and each *_env / *_file marked as set or missing. */
const encryptionSection = (e: EncryptionConfig): Section => ({ options: e as Record<string, unknown>, secretFields: ENCRYPTION_SECRETS });

/** Header names whose values are credentials (a webhook's `headers:`). */
const SECRET_HEADER = /auth|token|key|secret|signature|cookie|session|password|credential/i;

function redacted(cfg: Config): Record<string, unknown> {
  const section = (s: Section, notifier = false) => {
    const out: Record<string, unknown> = { ...s.options };
    for (const [k, v] of Object.entries(out)) {
      if (typeof v !== "string" || !/^[a-z][a-z0-9+.-]*:\/\//i.test(v)) continue;
      // A notifier's URL carries its credential in the path or the query (a webhook's ?token=, Slack's path):
      // scheme and host only. Elsewhere a URL keeps its path, without a password in it.
      out[k] = notifier ? redactUrlTail(v) : maskUrlCredentials(v);
    }
    for (const f of s.secretFields) {
      if (out[f] !== undefined) out[f] = "***";
      const env = out[`${f}_env`];
      if (typeof env === "string") out[`${f}_env`] = `${env} (${process.env[env] ? "set" : "NOT SET"})`;
    }
    // A store's env: map (restic, rclone): literal credentials are masked like any other secret.
    if (out.env && typeof out.env === "object") {
      out.env = Object.fromEntries(Object.entries(out.env as Record<string, unknown>).map(([k, v]) => [k, typeof v === "string" && isSecretEnvName(k) ? "***" : v]));
    }
    if (notifier && out.headers && typeof out.headers === "object") {
      out.headers = Object.fromEntries(Object.entries(out.headers as Record<string, unknown>).map(([k, v]) => [k, SECRET_HEADER.test(k) ? "***" : v]));
    }
    return out;
  };
  const map = <T extends Section>(rec: Record<string, T>, notifier = false) => Object.fromEntries(Object.entries(rec).map(([k, v]) => [k, section(v, notifier)]));
  return {
    datasources: map(cfg.datasources),
    stores: map(cfg.stores),
    ...(Object.keys(cfg.notifications).length ? { notifications: map(cfg.notifications, true) } : {}),
    jobs: Object.fromEntries(Object.entries(cfg.jobs).map(([k, j]) => {
      const { store: _s, ...rest } = j;
      return [k, rest.encryption ? { ...rest, encryption: section(encryptionSection(rest.encryption)) } : rest];
    })),
    timezone: cfg.timezone,
    ...(cfg.encryption ? { encryption: section(encryptionSection(cfg.encryption)) } : {}),
  };
}
