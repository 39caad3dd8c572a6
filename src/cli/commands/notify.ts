import type { Command } from "commander";
import { createNotifier, testEvent } from "../../notifiers/index.js";
import type { Context } from "../context.js";

export function registerNotify(program: Command, ctx: () => Context): void {
  const notify = program
    .command("notify")
    .description("check the notifiers of the config")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep notify test email_ops
  dbkeep notify test ops-webhook --job appdb-backup`,
    );
  notify
    .command("test")
    .description("send a test notification through one notifier of the config")
    .argument("<name>", "a name from the config's notifications")
    .option("--job <job>", "fill the notification with this job's datasource and store")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep notify test email_ops
  dbkeep -c /etc/dbkeep/dbkeep.yaml notify test ops-slack --job appdb-backup

Exit code 1 when the notification could not be sent (the error says why), 2 for a name the config does not define.`,
    )
    .action(async (name: string, flags: { job?: string }) => {
      const c = ctx();
      const config = c.config();
      const notifier = await createNotifier(config, name, (m) => c.log.warn(m));
      await notifier.notify(testEvent(config, flags.job), { signal: c.signal });
      process.stdout.write(`sent a test notification to ${name} (${notifier.type})\n`);
    });
}
