import { readFileSync, statSync } from "node:fs";
import * as z from "zod";
import { DbkeepError } from "../core/errors.js";
import { registerSecret } from "../core/redact.js";

/**
 * An `env:` map of a store whose work is done by a command-line tool (restic, rclone): extra environment variables
 * for the child, each a literal or `{ env: NAME }` (taken from dbkeep's own environment) or `{ file: PATH }` (a
 * Docker/Kubernetes secret file, trailing newline removed). Values read from the environment or a file are secrets
 * for redaction; so are literals whose name says they are one.
 */
export const envMapSchema = z.record(
  z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "environment variable names are letters, digits and _"),
  z.union([z.string(), z.strictObject({ env: z.string().min(1) }), z.strictObject({ file: z.string().min(1) })]),
);
export type EnvMap = z.infer<typeof envMapSchema>;

const SECRET_NAME = /PASS|SECRET|TOKEN|KEY|CREDENTIAL|SAS|AUTH/i;

/** Whether a variable of an env map holds a credential by its name (its literal value is then masked and redacted). */
export function isSecretEnvName(name: string): boolean {
  return SECRET_NAME.test(name) && !/_ID$/i.test(name);
}

/** Resolves an env map for a child process; `path` names the option in messages (e.g. "stores.offsite.env"). */
export function resolveEnvMap(map: EnvMap | undefined, path: string, warn?: (m: string) => void): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(map ?? {})) {
    if (typeof value === "string") {
      if (isSecretEnvName(name)) registerSecret(value);
      out[name] = value;
    } else if ("env" in value) {
      const v = process.env[value.env];
      if (v === undefined || v === "") {
        throw new DbkeepError("SECRET_MISSING", `${path}.${name}: environment variable ${value.env} is not set`, { hint: `export ${value.env}=... before running dbkeep` });
      }
      registerSecret(v);
      out[name] = v;
    } else {
      let v: string;
      try {
        v = readFileSync(value.file, "utf8").replace(/\r?\n$/, "");
        const mode = statSync(value.file).mode;
        if ((mode & 0o044) !== 0) warn?.(`${path}.${name}: ${value.file} is readable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
      } catch (err) {
        throw new DbkeepError("SECRET_MISSING", `${path}.${name}: cannot read ${value.file}: ${(err as Error).message}`);
      }
      registerSecret(v);
      out[name] = v;
    }
  }
  return out;
}
