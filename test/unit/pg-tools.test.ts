import { mkdirSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveTool } from "../../src/core/subprocess.js";
import { pgTool } from "../../src/engines/postgres/tools.js";
import { tempDir } from "../helpers/env.js";

describe("PostgreSQL client binaries", () => {
  it("skip Debian's pg_wrapper for the newest versioned binary, and keep what PATH gives otherwise", async () => {
    const onPath = await resolveTool("pg_dump");
    const viaWrapper = realpathSync(onPath).endsWith("/pg_wrapper");
    const chosen = await pgTool("pg_dump");
    if (viaWrapper) expect(chosen).toMatch(/^\/usr\/lib\/postgresql\/\d+(\.\d+)?\/bin\/pg_dump$/);
    else expect(chosen).toBe(onPath);
  });

  it("bin_dir is used as it is, even when its pg_dump is a link to pg_wrapper", async () => {
    const dir = tempDir();
    const bin = join(dir, "bin");
    mkdirSync(bin);
    const wrapper = join(dir, "pg_wrapper");
    writeFileSync(wrapper, "#!/bin/sh\n", { mode: 0o755 });
    symlinkSync(wrapper, join(bin, "pg_dump"));
    expect(await pgTool("pg_dump", bin)).toBe(join(bin, "pg_dump"));
  });
});
