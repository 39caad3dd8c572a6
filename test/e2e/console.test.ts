import { execFileSync } from "node:child_process";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, IN_CI, tempDir } from "../helpers/env.js";

/** The console in a real pseudo-terminal: tmux runs it, send-keys types, capture-pane reads the screen. */
const tmux = (...args: string[]) => execFileSync("tmux", args, { encoding: "utf8" });
const hasTmux = (() => {
  try {
    tmux("-V");
    return true;
  } catch (err) {
    if (IN_CI) throw new Error(`tmux is needed for the console test under CI: ${(err as Error).message}`, { cause: err });
    return false;
  }
})();

const dir = tempDir("dbkeep-console-");
const session = `dbkeep-console-${process.pid}`;
const screen = () => tmux("capture-pane", "-p", "-t", session, "-S", "-200");
async function waitFor(re: RegExp, ms = 15000): Promise<string> {
  const until = Date.now() + ms;
  for (;;) {
    const s = screen();
    if (re.test(s)) return s;
    if (Date.now() > until) throw new Error(`screen never showed ${re}:\n${s}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.runIf(hasTmux || IN_CI)("dbkeep console in a terminal", () => {
  afterAll(() => {
    try {
      tmux("kill-session", "-t", session);
    } catch {
      // already gone
    }
  });

  it("completes a table name with Tab, shows a query result, asks before a DROP, backs up and lists", async () => {
    const db = join(dir, "shop.db");
    const d = new Database(db);
    d.exec("CREATE TABLE customer_orders (order_id INTEGER PRIMARY KEY, customer_name TEXT); INSERT INTO customer_orders VALUES (1, 'Zoë'), (2, NULL);");
    d.close();
    const env = Object.entries({ ...CLI_ENV, DBKEEP_STATE_DIR: join(dir, "state") }).map(([k, v]) => `${k}='${v}'`).join(" ");
    tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", `env ${env} ${process.execPath} ${CLI} console sqlite:${db} --to ${join(dir, "backups")}`);
    await waitFor(/^shop>\s*$/m);

    tmux("send-keys", "-t", session, "sql SELECT customer_n");
    tmux("send-keys", "-t", session, "Tab");
    tmux("send-keys", "-t", session, " FROM cust");
    tmux("send-keys", "-t", session, "Tab");
    await waitFor(/sql SELECT customer_name FROM customer_orders/);
    tmux("send-keys", "-t", session, " ORDER BY 1", "Enter");
    let s = await waitFor(/\(2 rows\)/);
    expect(s).toMatch(/customer_name\n-+\nNULL\s*\nZoë\s*\n\(2 rows\)/);

    tmux("send-keys", "-t", session, "sql DROP TABLE customer_orders", "Enter");
    await waitFor(/DROP TABLE .*Run it\? \[y\/N\]\s*$/m);
    tmux("send-keys", "-t", session, "n", "Enter");
    await waitFor(/not run/);
    const check = new Database(db, { readonly: true });
    expect((check.prepare("SELECT count(*) AS n FROM customer_orders").get() as { n: number }).n).toBe(2);
    check.close();

    tmux("send-keys", "-t", session, "backup", "Enter");
    s = await waitFor(/full backup (shop-\d{8}-\d{6}):/);
    const id = /full backup (shop-\d{8}-\d{6}):/.exec(s)![1]!;
    tmux("send-keys", "-t", session, "list", "Enter");
    await waitFor(new RegExp(`${id} .* full  shop/${id}\\.db\\.gz`));

    // exit ends the program, and with it the tmux session.
    tmux("send-keys", "-t", session, "exit", "Enter");
    const until = Date.now() + 10000;
    let alive = true;
    while (alive && Date.now() < until) {
      try {
        tmux("has-session", "-t", session);
        await new Promise((r) => setTimeout(r, 100));
      } catch {
        alive = false;
      }
    }
    expect(alive).toBe(false);
  }, 60_000);
});

describe("dbkeep console with piped input", () => {
  it("runs every line in order, even those that arrive while a command runs, then ends at end of input", async () => {
    const { dbkeep, ROOT } = await import("../helpers/env.js");
    const dir = tempDir();
    const r = dbkeep(["console", `sqlite:${join(ROOT, "examples/app.db")}`, "--to", join(dir, "backups")], {
      input: "tables\nsql SELECT count(*) AS n FROM customers\nbackup\nlist\nsql DROP TABLE customers\nn\n",
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/order_totals \(customer_id, total_cents\)/);
    expect(r.stdout).toMatch(/\n500\n/);
    expect(r.stdout).toMatch(/full backup app-\d{8}-\d{6}/);
    expect(r.stdout).toMatch(/app-\d{8}-\d{6} .* full /);
    // The DROP asked first, read "n" as its answer, and the table is still there.
    expect(r.stdout + r.stderr).toMatch(/\[y\/N\]/);
    const db = new Database(join(ROOT, "examples/app.db"), { readonly: true });
    expect((db.prepare("SELECT count(*) AS n FROM customers").get() as { n: number }).n).toBe(500);
    db.close();
    expect(r.stdout.trimEnd().endsWith("bye")).toBe(true);
  });
});
