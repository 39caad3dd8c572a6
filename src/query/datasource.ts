import type { Config, Section } from "../config/load.js";
import { resolveSecret } from "../config/load.js";
import { isLocation, redactUrl, sourceFromUrl } from "../config/urls.js";
import { DbkeepError } from "../core/errors.js";
import type { Secret } from "../core/redact.js";

export interface ResolvedDatasource {
  /** The datasource's name in the config, or the URL with any password masked. */
  name: string;
  /** Dotted path for messages about secrets: datasources.<name>, or "source" for a URL. */
  path: string;
  section: Section & { engine: string };
  oneOff: boolean;
  secret(field: string): Secret | undefined;
}

/** A DATASOURCE argument: a URL (postgres://, mysql://, sqlite:./file.db ...) or a datasource of the config. */
export function resolveDatasource(arg: string, config: () => Config, warn: (m: string) => void): ResolvedDatasource {
  if (isLocation(arg)) {
    const source = sourceFromUrl(arg);
    for (const w of source.warnings) warn(w);
    const { warnings: _w, ...section } = source;
    return { name: redactUrl(arg), path: "source", section, oneOff: true, secret: (f) => resolveSecret(section, f, "source", warn) };
  }
  const c = config();
  const section = c.datasources[arg];
  if (!section) {
    const names = Object.keys(c.datasources);
    throw new DbkeepError("USAGE", `unknown datasource "${arg}"`, {
      hint: `${names.length ? `datasources: ${names.join(", ")}` : "the config defines no datasources"}; or give a URL such as postgres://user@host/db or sqlite:./app.db`,
    });
  }
  const path = `datasources.${arg}`;
  return { name: arg, path, section, oneOff: false, secret: (f) => resolveSecret(section, f, path, warn) };
}
