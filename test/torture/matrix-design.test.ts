import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { cellName, covers, MATRIX_AXES, requirements, roundtripMatrix, type Cell, type MatrixAxes } from "./matrix-design.js";

const key = (c: Cell, fields: (keyof Cell)[]) => fields.map((f) => c[f]).join("|");
const cross = <T>(...lists: T[][]): T[][] => lists.reduce<T[][]>((acc, l) => acc.flatMap((a) => l.map((x) => [...a, x])), [[]]);

/** The tuples of `fields` that the cells (or the cells of one engine) contain. */
function seen(cells: Cell[], fields: (keyof Cell)[]): Set<string> {
  return new Set(cells.map((c) => key(c, fields)));
}

describe("the roundtrip matrix's covering design", () => {
  const cells = roundtripMatrix(MATRIX_AXES);
  const { compressions: C, encryptions: E, stores: S } = MATRIX_AXES;

  it("holds every engine's mode x compression cross exactly once, and nothing else: 52 cells for 4 engines", () => {
    expect(cells).toHaveLength(MATRIX_AXES.engines.reduce((n, e) => n + e.modes.length * C.length, 0));
    expect(cells).toHaveLength(52);
    const names = cells.map((c) => key(c, ["engine", "mode", "compression"]));
    expect(new Set(names).size).toBe(names.length);
    for (const { engine, modes } of MATRIX_AXES.engines) {
      for (const [mode, compression] of cross([...modes], [...C])) expect(names).toContain(`${engine}|${mode}|${compression}`);
    }
    expect(new Set(cells.map(cellName)).size).toBe(cells.length);
  });

  it("covers every (compression, encryption, store) triple", () => {
    const got = seen(cells, ["compression", "encryption", "store"]);
    for (const t of cross([...C], [...E], [...S])) expect(got, t.join("/")).toContain(t.join("|"));
  });

  it("per engine: every (mode, encryption) pair, every store; with two or more modes every (compression, encryption) pair; with six or more cells every (store, encryption) pair", () => {
    for (const { engine, modes } of MATRIX_AXES.engines) {
      const mine = cells.filter((c) => c.engine === engine);
      for (const t of cross([...modes], [...E])) expect(seen(mine, ["mode", "encryption"]), `${engine} ${t.join("/")}`).toContain(t.join("|"));
      for (const s of S) expect(seen(mine, ["store"]), `${engine} ${s}`).toContain(s);
      if (modes.length >= 2) for (const t of cross([...C], [...E])) expect(seen(mine, ["compression", "encryption"]), `${engine} ${t.join("/")}`).toContain(t.join("|"));
      if (mine.length >= S.length * E.length) for (const t of cross([...S], [...E])) expect(seen(mine, ["store", "encryption"]), `${engine} ${t.join("/")}`).toContain(t.join("|"));
    }
    // SQLite (one mode, four cells) is the engine too small for the last two: its compressions meet both encryptions
    // only through the other engines' cells, which the triple coverage guarantees.
    expect(MATRIX_AXES.engines.find((e) => e.engine === "sqlite")?.modes).toHaveLength(1);
  });

  it("also crosses every mode with every store, so chains and partial backups go through each remote store", () => {
    for (const { engine, modes } of MATRIX_AXES.engines) {
      const mine = cells.filter((c) => c.engine === engine);
      for (const t of cross([...modes], [...S])) expect(seen(mine, ["mode", "store"]), `${engine} ${t.join("/")}`).toContain(t.join("|"));
    }
  });

  it("is deterministic", () => {
    expect(roundtripMatrix(MATRIX_AXES)).toEqual(cells);
  });

  it("for any axes, every required tuple is covered and every (engine, mode, compression) appears", () => {
    const name = fc.constantFrom("a", "b", "c", "d", "e", "f", "g");
    const values = fc.uniqueArray(name, { minLength: 1, maxLength: 5 });
    const axes: fc.Arbitrary<MatrixAxes> = fc.record({
      engines: fc.uniqueArray(fc.record({ engine: name, modes: values }), { minLength: 1, maxLength: 4, selector: (e) => e.engine }),
      compressions: values,
      encryptions: fc.uniqueArray(name, { minLength: 1, maxLength: 3 }),
      stores: fc.uniqueArray(name, { minLength: 1, maxLength: 4 }),
    });
    fc.assert(
      fc.property(axes, (a) => {
        const out = roundtripMatrix(a);
        for (const r of requirements(a).filter((x) => x.required)) {
          if (!out.some((c) => covers(c, r))) throw new Error(`uncovered ${r.kind} ${JSON.stringify(r.fixed)}`);
        }
        const base = seen(out, ["engine", "mode", "compression"]);
        for (const { engine, modes } of a.engines) for (const m of modes) for (const c of a.compressions) if (!base.has(`${engine}|${m}|${c}`)) throw new Error(`no cell ${engine}/${m}/${c}`);
        for (const c of out) {
          if (!a.encryptions.includes(c.encryption) || !a.stores.includes(c.store)) throw new Error(`value outside the axes: ${cellName(c)}`);
        }
        // The triple is demanded whenever every compression has enough cells to hold it.
        if (a.engines.reduce((n, e) => n + e.modes.length, 0) >= a.encryptions.length * a.stores.length) {
          const got = seen(out, ["compression", "encryption", "store"]);
          for (const t of cross([...a.compressions], [...a.encryptions], [...a.stores])) if (!got.has(t.join("|"))) throw new Error(`triple ${t.join("/")} missing`);
        }
      }),
      { numRuns: 300 },
    );
  });
});
