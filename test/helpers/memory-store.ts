import { Readable } from "node:stream";
import { DbkeepError } from "../../src/core/errors.js";
import type { PutOptions, Store, StoreObject } from "../../src/stores/store.js";

/**
 * A store in memory for property tests, with the Store contract's guarantees (an object appears whole at once,
 * ifAbsent decided atomically). Every operation first awaits `step(op, key)`, which a test can use to interleave
 * concurrent runs in any order (fast-check's scheduler).
 */
export class MemoryStore implements Store {
  readonly name: string;
  readonly atomicCreate = true;
  readonly objects = new Map<string, { data: Buffer; modified: Date }>();
  step: (op: string, key: string) => Promise<void> = async () => undefined;
  clock: () => Date = () => new Date();

  constructor(name = "memory:test") {
    this.name = name;
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<{ bytes: number }> {
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as string));
    await this.step("put", key);
    if (opts.signal?.aborted) throw new DbkeepError("ABORTED", `upload of ${key} was cancelled`);
    if (opts.ifAbsent && this.objects.has(key)) throw new DbkeepError("ALREADY_EXISTS", `[store:${this.name}] ${key} exists`);
    const data = Buffer.concat(chunks);
    this.objects.set(key, { data, modified: this.clock() });
    return { bytes: data.length };
  }

  async get(key: string): Promise<Readable> {
    await this.step("get", key);
    const o = this.objects.get(key);
    if (!o) throw new DbkeepError("STORE_NOT_FOUND", `[store:${this.name}] ${key} not found`);
    return Readable.from([o.data]);
  }

  async stat(key: string): Promise<StoreObject | undefined> {
    await this.step("stat", key);
    const o = this.objects.get(key);
    return o ? { key, size: o.data.length, modified: o.modified } : undefined;
  }

  async *list(prefix: string): AsyncIterable<StoreObject> {
    await this.step("list", prefix);
    const snapshot = [...this.objects].filter(([k]) => k.startsWith(prefix));
    for (const [key, o] of snapshot) yield { key, size: o.data.length, modified: o.modified };
  }

  async delete(keys: string[]): Promise<void> {
    for (const k of keys) {
      await this.step("delete", k);
      this.objects.delete(k);
    }
  }

  async close(): Promise<void> {}

  text(key: string): string | undefined {
    return this.objects.get(key)?.data.toString("utf8");
  }

  set(key: string, text: string | Buffer, modified = this.clock()): void {
    this.objects.set(key, { data: Buffer.isBuffer(text) ? text : Buffer.from(text), modified });
  }
}
