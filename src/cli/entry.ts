#!/usr/bin/env node
import { VERSION } from "../core/version.js";

/**
 * The program users run (bundled into dist/bin/dbkeep.js). `dbkeep --version` is answered here, before the CLI and
 * everything it imports are loaded (0.2 s of a 0.25 s run); everything else goes to main.ts, which prints the same
 * line for a version asked for with other options.
 */
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === "--version" || args[0] === "-V")) process.stdout.write(`${VERSION}\n`);
else await import("./main.js");
