import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { UnqualifySequences, unqualifyLines } from "../../src/engines/mysql/sequences.js";

const DUMP = [
  "-- MariaDB dump",
  "CREATE SEQUENCE `ticket_no` start with 1000 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB;",
  "CREATE TABLE `tickets` (",
  "  `no` int(11) NOT NULL DEFAULT nextval(`src db`.`ticket_no`),",
  "  `other` int(11) DEFAULT nextval(`elsewhere`.`seq`),",
  "  `last` int(11) DEFAULT lastval(`src db`.`ticket_no`),",
  "  `subject` text DEFAULT NULL,",
  "  PRIMARY KEY (`no`)",
  ") ENGINE=InnoDB;",
  "INSERT INTO `tickets` VALUES (1000,NULL,NULL,'  `x` = nextval(`src db`.`ticket_no`)'),(1001,NULL,NULL,'" + "y".repeat(5000) + "');",
  "  `not a column` nextval(`src db`.`ticket_no`) in a string that starts a line",
  "",
].join("\n");

const WANT = DUMP.replace("DEFAULT nextval(`src db`.`ticket_no`),", "DEFAULT nextval(`ticket_no`),")
  .replace("lastval(`src db`.`ticket_no`)", "lastval(`ticket_no`)")
  .replace("  `not a column` nextval(`src db`.", "  `not a column` nextval(");

describe("sequence defaults restored under another database name", () => {
  it("drops the source database's name on column lines only; other databases and row data stay", () => {
    expect(Buffer.concat(unqualifyLines(Buffer.from(DUMP), "src db")).toString()).toBe(WANT);
  });

  it("gives the same bytes however the stream is cut into chunks", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: DUMP.length }), { maxLength: 12 }), async (cuts) => {
        const bytes = Buffer.from(DUMP);
        const at = [...new Set(cuts)].sort((a, b) => a - b);
        const chunks = [0, ...at].map((from, i) => bytes.subarray(from, at[i] ?? bytes.length)).filter((c) => c.length);
        const out = await buffer(Readable.from(chunks).pipe(new UnqualifySequences("src db")));
        expect(out.toString()).toBe(WANT);
      }),
      { numRuns: 200 },
    );
  });
});
