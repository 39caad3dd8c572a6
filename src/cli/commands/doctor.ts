import type { Command } from "commander";
import { isLocation } from "../../config/urls.js";
import { DbkeepError, toDbkeepError } from "../../core/errors.js";
import { openEngine } from "../../core/jobs.js";
import { redact } from "../../core/redact.js";
import type { DoctorFinding } from "../../engines/engine.js";
import { oneOffPlan, type Context } from "../context.js";

interface Report {
  datasource: string;
  engine: string;
  findings: DoctorFinding[];
}

const MARK: Record<DoctorFinding["level"], string> = { ok: "✓", warn: "!", error: "✗" };

/** Runs one datasource's checks; an engine without doctor() falls back to check(), which throws on the first problem. */
async function diagnose(name: string, plan: Parameters<typeof openEngine>[0], engineName: string): Promise<Report> {
  try {
    const engine = await openEngine(plan);
    if (engine.doctor) return { datasource: name, engine: engineName, findings: await engine.doctor() };
    const { tools, server } = await engine.check();
    const findings: DoctorFinding[] = Object.entries(tools).map(([t, v]) => ({ level: "ok", message: `${t} ${v}` }));
    if (server) findings.push({ level: "ok", message: `server ${server}` });
    return { datasource: name, engine: engineName, findings };
  } catch (err) {
    const e = toDbkeepError(err);
    return { datasource: name, engine: engineName, findings: [{ level: "error", message: e.message, ...(e.hint ? { hint: e.hint } : {}) }] };
  }
}

export function registerDoctor(program: Command, ctx: () => Context): void {
  program
    .command("doctor")
    .description("check each datasource before a job runs: client tools, versions, server reachability, privileges")
    .argument("[datasource...]", "datasource names of the config, or source URLs (default: every datasource)")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep doctor
  dbkeep -c dbkeep.yaml doctor appdb --json
  dbkeep doctor postgres://backup@db.internal:5432/app

Exit codes: 0 no errors (warnings allowed), 1 at least one error.`,
    )
    .action(async (names: string[], flags: { json?: boolean }) => {
      const c = ctx();
      const reports: Report[] = [];
      const targets = names.length ? names : Object.keys(c.config().datasources);
      if (targets.length === 0) throw new DbkeepError("USAGE", "the config defines no datasources", { hint: "name a source URL: dbkeep doctor postgres://user@host/db" });
      for (const name of targets) {
        if (isLocation(name)) {
          const plan = oneOffPlan(name, "./", {}, c.log);
          reports.push(await diagnose(redact(name), plan, plan.datasource.section.engine));
          continue;
        }
        const ds = c.config().datasources[name];
        if (!ds) {
          throw new DbkeepError("USAGE", `unknown datasource "${name}"`, { hint: `datasources: ${Object.keys(c.config().datasources).join(", ") || "none"}` });
        }
        reports.push(await diagnose(name, { datasource: { path: `datasources.${name}`, section: ds }, oneOff: false }, ds.engine));
      }
      const failed = reports.some((r) => r.findings.some((f) => f.level === "error"));
      if (flags.json) {
        process.stdout.write(JSON.stringify({ ok: !failed, datasources: reports }, null, 2) + "\n");
      } else {
        for (const r of reports) {
          process.stdout.write(`${r.datasource} (${r.engine})\n`);
          for (const f of r.findings) {
            process.stdout.write(`  ${MARK[f.level]} ${f.message}\n`);
            if (f.hint && f.level !== "ok") process.stdout.write(`      hint: ${f.hint}\n`);
          }
        }
      }
      if (failed) process.exitCode = 1;
    });
}
