import { createHash, randomBytes } from "node:crypto";
import { createReadStream, mkdtempSync, rmSync } from "node:fs";
import { open, rename, rm, truncate } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A small stand-in for the Google Cloud Storage JSON API, enough for the gcs store: resumable uploads (initiation,
 * chunks with Content-Range, status queries, cancellation; the object appears only when the final chunk arrives),
 * multipart uploads, metadata, media download with x-goog-hash, paginated listing and delete. Object bodies live in
 * a temp dir, so memory does not grow with object size. It runs in the test process: no TypeScript runner exists
 * here to start it as a child.
 *
 * Preconditions: `ifGenerationMatch` on an upload (0: only if no live object exists) is decided when the object would
 * appear, that is at the final chunk of a resumable upload (GCS takes the parameter when the session is opened and
 * answers 412 conditionNotMet when the upload completes), and a failed session answers 412 from then on.
 *
 * Not the real service: it checks no credentials (requests to a bucket named in `denied` get the 403 GCS answers an
 * unauthorised caller), and it implements only what the store uses.
 */
export interface GcsFake {
  endpoint: string;
  /** Resumable sessions opened, and those still open (neither finalised nor cancelled). */
  sessions(): { opened: number; open: number; cancelled: number; receivedOpen: number };
  /** Names of the objects of a bucket (complete objects only). */
  objects(bucket: string): string[];
  stop(): Promise<void>;
}

interface ObjectMeta {
  bucket: string;
  name: string;
  size: number;
  generation: number;
  md5: string;
  crc32c: string;
  contentType: string;
  created: string;
  updated: string;
  file: string;
}

interface Session {
  bucket: string;
  name: string;
  contentType: string;
  file: string;
  received: number;
  state: "open" | "final" | "cancelled" | "failed";
  /** ifGenerationMatch of the request that opened the session (0: only if no live object exists). */
  ifGenerationMatch?: number;
}

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

function crc32cUpdate(crc: number, buf: Buffer): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < buf.length; i++) c = (CRC32C_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8)) >>> 0;
  return ~c >>> 0;
}

async function hashesOf(file: string): Promise<{ md5: string; crc32c: string }> {
  const md5 = createHash("md5");
  let crc = 0;
  for await (const c of createReadStream(file)) {
    md5.update(c as Buffer);
    crc = crc32cUpdate(crc, c as Buffer);
  }
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc);
  return { md5: md5.digest("base64"), crc32c: b.toString("base64") };
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=UTF-8", "content-length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

function apiError(res: ServerResponse, status: number, message: string): void {
  json(res, status, { error: { code: status, message, errors: [{ message, domain: "global", reason: status === 404 ? "notFound" : status === 403 ? "forbidden" : "invalid" }] } });
}

/** The JSON API's answer to a request whose ifGenerationMatch did not hold. */
function preconditionFailed(res: ServerResponse): void {
  const message = "At least one of the pre-conditions you specified did not hold.";
  json(res, 412, { error: { code: 412, message, errors: [{ message, domain: "global", reason: "conditionNotMet", locationType: "header", location: "If-Match" }] } });
}

/** ifGenerationMatch of a request: a number, or undefined when absent. */
function generationMatch(q: URLSearchParams): number | undefined {
  const v = q.get("ifGenerationMatch");
  return v === null ? undefined : Number(v);
}

async function readBody(req: IncomingMessage, limit = 16 * 1024 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > limit) throw new Error("body too large for the fake");
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

export async function startGcsFake(opts: { buckets: string[]; denied?: string[] }): Promise<GcsFake> {
  const dir = mkdtempSync(join(tmpdir(), "dbkeep-gcs-fake-"));
  const buckets = new Map<string, Map<string, ObjectMeta>>(opts.buckets.map((b) => [b, new Map()]));
  const denied = new Set(opts.denied ?? []);
  const sessions = new Map<string, Session>();
  let generation = 1_700_000_000_000_000;
  let endpoint = "";

  function meta(o: ObjectMeta) {
    return {
      kind: "storage#object",
      id: `${o.bucket}/${o.name}/${o.generation}`,
      selfLink: `${endpoint}/storage/v1/b/${o.bucket}/o/${encodeURIComponent(o.name)}`,
      name: o.name,
      bucket: o.bucket,
      generation: String(o.generation),
      metageneration: "1",
      contentType: o.contentType,
      storageClass: "STANDARD",
      size: String(o.size),
      md5Hash: o.md5,
      crc32c: o.crc32c,
      timeCreated: o.created,
      updated: o.updated,
    };
  }

  async function finalise(s: Session, res: ServerResponse): Promise<void> {
    const objects = buckets.get(s.bucket)!;
    // An interrupted request may have written past the bytes that count.
    await truncate(s.file, s.received);
    const { md5, crc32c } = await hashesOf(s.file);
    const gen = ++generation;
    const file = join(dir, `obj-${gen}`);
    await rename(s.file, file);
    const now = new Date().toISOString();
    const previous = objects.get(s.name);
    // The precondition of the session holds or not at the moment the object would appear (no await from here to
    // the set below, so two sessions finalising one name are decided one after the other), as GCS decides it when
    // the upload completes: a session opened while the name was free still fails if another upload took it since.
    if (s.ifGenerationMatch !== undefined && s.ifGenerationMatch !== (previous?.generation ?? 0)) {
      s.state = "failed";
      await rm(file, { force: true });
      return preconditionFailed(res);
    }
    objects.set(s.name, { bucket: s.bucket, name: s.name, size: s.received, generation: gen, md5, crc32c, contentType: s.contentType, created: now, updated: now, file });
    if (previous) await rm(previous.file, { force: true });
    s.state = "final";
    json(res, 200, meta(objects.get(s.name)!));
  }

  /** One PUT of a resumable session: a status query, a chunk, or the final chunk. */
  async function putChunk(s: Session, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (s.state === "cancelled") {
      await readBody(req).catch(() => undefined);
      return apiError(res, 499, "the upload was cancelled");
    }
    if (s.state === "failed") {
      await readBody(req).catch(() => undefined);
      return preconditionFailed(res);
    }
    if (s.state === "final") {
      await readBody(req).catch(() => undefined);
      return json(res, 200, meta(buckets.get(s.bucket)!.get(s.name)!));
    }
    const range = req.headers["content-range"] ?? "";
    const incomplete = () => {
      res.writeHead(308, s.received > 0 ? { range: `bytes=0-${s.received - 1}`, "content-length": "0" } : { "content-length": "0" });
      res.end();
    };
    let m = /^bytes \*\/(\*|\d+)$/.exec(range);
    if (m) {
      await readBody(req);
      if (m[1] !== "*" && Number(m[1]) === s.received) return finalise(s, res);
      return incomplete();
    }
    m = /^bytes (\d+)-(\d+|\*)\/(\*|\d+)$/.exec(range);
    if (!m) {
      await readBody(req).catch(() => undefined);
      return apiError(res, 400, `invalid Content-Range "${range}"`);
    }
    const start = Number(m[1]);
    if (start !== s.received) {
      await readBody(req).catch(() => undefined);
      return apiError(res, 400, `chunk starts at ${start}, ${s.received} bytes were received`);
    }
    const declaredEnd = m[2] === "*" ? undefined : Number(m[2]);
    const total = m[3] === "*" ? undefined : Number(m[3]);
    // Written after the bytes received so far; counted only when the whole request arrived.
    const fh = await open(s.file, "r+");
    let n = 0;
    try {
      for await (const c of req) {
        await fh.write(c as Buffer, 0, (c as Buffer).length, start + n);
        n += (c as Buffer).length;
      }
    } finally {
      await fh.close();
    }
    if (!req.complete) return;
    if (declaredEnd !== undefined && declaredEnd - start + 1 !== n) return apiError(res, 400, `Content-Range declares ${declaredEnd - start + 1} bytes, ${n} were sent`);
    s.received += n;
    if (total !== undefined && total === s.received) return finalise(s, res);
    if (total !== undefined && s.received > total) return apiError(res, 400, "more bytes than the declared total");
    // `bytes N-*/*` is a request that carries the rest of the object: it ends the upload.
    if (declaredEnd === undefined && total === undefined) return finalise(s, res);
    return incomplete();
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", endpoint);
    const path = url.pathname;
    const q = url.searchParams;
    const method = req.method ?? "GET";

    let m = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(path);
    if (m) {
      const bucket = decodeURIComponent(m[1]!);
      const uploadId = q.get("upload_id");
      if (uploadId) {
        const s = sessions.get(uploadId);
        if (!s) return apiError(res, 404, "no such upload session");
        if (method === "DELETE") {
          if (s.state === "open") {
            s.state = "cancelled";
            await rm(s.file, { force: true });
          }
          return apiError(res, 499, "Client Closed Request");
        }
        if (method === "PUT") return putChunk(s, req, res);
        return apiError(res, 405, "method not allowed");
      }
      if (denied.has(bucket)) {
        await readBody(req).catch(() => undefined);
        return apiError(res, 403, "Anonymous caller does not have storage.objects.create access to the Google Cloud Storage object. Permission 'storage.objects.create' denied on resource (or it may not exist).");
      }
      if (!buckets.has(bucket)) {
        await readBody(req).catch(() => undefined);
        return apiError(res, 404, "The specified bucket does not exist.");
      }
      if (method === "POST" && q.get("uploadType") === "resumable") {
        const body = await readBody(req);
        const md = body.length > 0 ? (JSON.parse(body.toString()) as { name?: string; contentType?: string }) : {};
        const name = q.get("name") ?? md.name;
        if (!name) return apiError(res, 400, "object name required");
        const id = randomBytes(12).toString("hex");
        const file = join(dir, `session-${id}`);
        await (await open(file, "w")).close();
        const pre = generationMatch(q);
        sessions.set(id, { bucket, name, contentType: String(req.headers["x-upload-content-type"] ?? md.contentType ?? "application/octet-stream"), file, received: 0, state: "open", ...(pre === undefined ? {} : { ifGenerationMatch: pre }) });
        res.writeHead(200, { location: `${endpoint}/upload/storage/v1/b/${encodeURIComponent(bucket)}/o?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${id}`, "content-length": "0" });
        return void res.end();
      }
      if (method === "POST" && q.get("uploadType") === "multipart") {
        const body = await readBody(req);
        const boundary = /boundary="?([^";]+)"?/.exec(String(req.headers["content-type"] ?? ""))?.[1];
        if (!boundary) return apiError(res, 400, "multipart body without boundary");
        const parts: Buffer[] = [];
        const sep = Buffer.from(`--${boundary}`);
        let at = body.indexOf(sep);
        while (at >= 0) {
          const next = body.indexOf(sep, at + sep.length);
          if (next < 0) break;
          const part = body.subarray(at + sep.length, next);
          const headEnd = part.indexOf("\r\n\r\n");
          if (headEnd >= 0) parts.push(part.subarray(headEnd + 4, part.length - 2));
          at = next;
        }
        if (parts.length !== 2) return apiError(res, 400, `multipart body with ${parts.length} parts`);
        const md = JSON.parse(parts[0]!.toString()) as { name?: string; contentType?: string };
        const name = q.get("name") ?? md.name;
        if (!name) return apiError(res, 400, "object name required");
        const id = randomBytes(12).toString("hex");
        const file = join(dir, `session-${id}`);
        const fh = await open(file, "w");
        await fh.write(parts[1]!);
        await fh.close();
        const pre = generationMatch(q);
        const s: Session = { bucket, name, contentType: md.contentType ?? "application/octet-stream", file, received: parts[1]!.length, state: "open", ...(pre === undefined ? {} : { ifGenerationMatch: pre }) };
        sessions.set(id, s);
        return finalise(s, res);
      }
      return apiError(res, 400, `unsupported upload ${method} ${url.search}`);
    }

    m = /^\/storage\/v1\/b\/([^/]+)\/o(?:\/(.+))?$/.exec(path);
    if (!m) return apiError(res, 404, `not found: ${method} ${path}`);
    const bucket = decodeURIComponent(m[1]!);
    if (denied.has(bucket)) return apiError(res, 403, "Anonymous caller does not have storage.objects.list access to the Google Cloud Storage bucket.");
    const objects = buckets.get(bucket);
    if (!objects) return apiError(res, 404, "The specified bucket does not exist.");

    if (m[2] === undefined) {
      if (method !== "GET") return apiError(res, 405, "method not allowed");
      const prefix = q.get("prefix") ?? "";
      const max = Math.min(Number(q.get("maxResults") ?? 1000), 1000);
      const after = q.get("pageToken") ? Buffer.from(q.get("pageToken")!, "base64url").toString() : undefined;
      const names = [...objects.keys()].filter((n) => n.startsWith(prefix) && (after === undefined || n > after)).sort();
      const page = names.slice(0, max);
      const more = names.length > max;
      return json(res, 200, {
        kind: "storage#objects",
        items: page.map((n) => meta(objects.get(n)!)),
        ...(more ? { nextPageToken: Buffer.from(page[page.length - 1]!).toString("base64url") } : {}),
      });
    }

    const name = decodeURIComponent(m[2]);
    const o = objects.get(name);
    const wanted = q.get("generation");
    if (!o || (wanted !== null && Number(wanted) !== o.generation)) return apiError(res, 404, `No such object: ${bucket}/${name}`);
    if (method === "DELETE") {
      objects.delete(name);
      await rm(o.file, { force: true });
      res.writeHead(204);
      return void res.end();
    }
    if (method !== "GET") return apiError(res, 405, "method not allowed");
    if (q.get("alt") === "media") {
      res.writeHead(200, {
        "content-type": o.contentType,
        "content-length": String(o.size),
        "x-goog-hash": `crc32c=${o.crc32c},md5=${o.md5}`,
        "x-goog-generation": String(o.generation),
        "x-goog-stored-content-encoding": "identity",
        "x-goog-stored-content-length": String(o.size),
      });
      const rs = createReadStream(o.file);
      rs.on("error", (e) => res.destroy(e));
      rs.pipe(res);
      return;
    }
    return json(res, 200, meta(o));
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) apiError(res, 500, `fake failed: ${(err as Error).message}`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  return {
    endpoint,
    sessions() {
      const all = [...sessions.values()];
      const open = all.filter((s) => s.state === "open");
      return { opened: all.length, open: open.length, cancelled: all.filter((s) => s.state === "cancelled").length, receivedOpen: open.reduce((n, s) => n + s.received, 0) };
    },
    objects(bucket) {
      return [...(buckets.get(bucket)?.keys() ?? [])].sort();
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
