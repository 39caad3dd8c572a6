/**
 * The daemon's metrics in Prometheus' text format. Label values are job and store names from the config, never
 * connection strings or anything that could hold a secret.
 */
export interface JobMetrics {
  lastSuccess?: number;
  lastDuration?: number;
  lastSize?: number;
  lastAttempts?: number;
  nextRun?: number;
  running: boolean;
  results: { success: number; failure: number; skipped: number };
  lastVerify?: number;
  restoreSeconds?: number;
}

export class Metrics {
  readonly jobs = new Map<string, JobMetrics>();
  readonly uploaded = new Map<string, number>();
  reloads = { success: 0, failure: 0 };
  readonly started = Date.now() / 1000;

  job(name: string): JobMetrics {
    let m = this.jobs.get(name);
    if (!m) {
      m = { running: false, results: { success: 0, failure: 0, skipped: 0 } };
      this.jobs.set(name, m);
    }
    return m;
  }

  addUploaded(store: string, bytes: number): void {
    this.uploaded.set(store, (this.uploaded.get(store) ?? 0) + bytes);
  }

  render(): string {
    const out: string[] = [];
    const family = (name: string, type: "gauge" | "counter", help: string, samples: [Record<string, string>, number | undefined][]) => {
      const present = samples.filter((s): s is [Record<string, string>, number] => s[1] !== undefined);
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of present) out.push(`${name}${fmtLabels(labels)} ${Number.isInteger(value) ? value : value.toFixed(3)}`);
    };
    const per = (f: (m: JobMetrics) => number | undefined) => [...this.jobs].map(([job, m]) => [{ job }, f(m)] as [Record<string, string>, number | undefined]);
    family("dbkeep_up", "gauge", "1 while the daemon runs", [[{}, 1]]);
    family("dbkeep_start_time_seconds", "gauge", "When the daemon started (Unix time)", [[{}, Math.floor(this.started)]]);
    family("dbkeep_job_last_success_timestamp_seconds", "gauge", "When the job last succeeded (Unix time)", per((m) => m.lastSuccess));
    family("dbkeep_job_last_run_duration_seconds", "gauge", "Duration of the job's last run", per((m) => m.lastDuration));
    family("dbkeep_job_last_size_bytes", "gauge", "Stored size of the job's last backup", per((m) => m.lastSize));
    family("dbkeep_job_last_attempts", "gauge", "Attempts the job's last run took", per((m) => m.lastAttempts));
    family("dbkeep_job_next_run_timestamp_seconds", "gauge", "When the job runs next (Unix time)", per((m) => m.nextRun));
    family("dbkeep_job_running", "gauge", "1 while the job runs", per((m) => (m.running ? 1 : 0)));
    family(
      "dbkeep_job_runs_total",
      "counter",
      "Runs by result (skipped: due while the previous run still ran)",
      [...this.jobs].flatMap(([job, m]) => (["success", "failure", "skipped"] as const).map((result) => [{ job, result }, m.results[result]] as [Record<string, string>, number])),
    );
    family("dbkeep_last_verify_timestamp", "gauge", "When the job's latest backup was last verified by a restore (Unix time)", per((m) => m.lastVerify));
    family("dbkeep_restore_seconds", "gauge", "How long the last verification restore took", per((m) => m.restoreSeconds));
    family("dbkeep_store_uploaded_bytes_total", "counter", "Bytes uploaded per store", [...this.uploaded].map(([store, v]) => [{ store }, v]));
    family("dbkeep_config_reloads_total", "counter", "Config reloads by result", [[{ result: "success" }, this.reloads.success], [{ result: "failure" }, this.reloads.failure]]);
    return out.join("\n") + "\n";
  }
}

function fmtLabels(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}
