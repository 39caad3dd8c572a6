import { createHash, randomBytes } from "node:crypto";
import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Transform } from "node:stream";

export type Fault = "500" | "503" | "reset";

export interface FaultProxyOptions {
  /** Share of requests that fail, 0..1. */
  rate: number;
  /** Seed of the PRNG that picks the failing requests (same seed, same sequence). */
  seed?: number;
  /** Kinds of failure, picked in turn among the failing requests. */
  faults?: Fault[];
  /**
   * Requests whose body is dropped on the way (forwarded with an empty body, the server then stores 0 bytes and
   * answers 200): a server that lost the data without saying so. Each match is used up once.
   */
  loseBodyOf?: { method: string; path: RegExp; times: number };
  /**
   * Requests whose body gets one byte changed on the way (the byte in the middle of the body, or at `offset`), with
   * length and headers unchanged: data corrupted in flight. Each match is used up once. With `checkMd5`, the proxy
   * then answers as a service that verifies Content-MD5 does (400 BadDigest, nothing forwarded); without it, the
   * corrupted body reaches the server, which keeps it if it verifies nothing (s3rver verifies no checksum).
   */
  flipByteOf?: { method: string; path: RegExp; times: number; offset?: number; checkMd5?: boolean };
  /**
   * Makes the server honour `If-None-Match: *` on PutObject and CompleteMultipartUpload, as AWS S3 and MinIO do and
   * s3rver does not: such a request for a key that exists gets 412 PreconditionFailed. The check (a HEAD upstream)
   * and the write are serialised per key inside the proxy, so for clients that all go through it the decision is
   * atomic.
   */
  conditionalWrites?: boolean;
  /**
   * Answers like a service whose part ETags are opaque tokens rather than MD5 digests (as Cloudflare R2's were): each
   * UploadPart answer gets a random ETag, and the CompleteMultipartUpload answer the AWS form of the object's ETag,
   * the MD5 of the parts' MD5s (as the server computed them from what it received) followed by "-N".
   */
  opaquePartEtags?: boolean;
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  fault?: Fault | "lost-body" | "flipped-byte" | "precondition-failed";
}

export interface FaultProxy {
  endpoint: string;
  port: number;
  /** Every request seen, in order, with the fault it got (if any). */
  requests: RecordedRequest[];
  /** Changes the share of failing requests from now on (0 passes everything through). */
  setRate(rate: number): void;
  stop(): Promise<void>;
}

/** mulberry32: small, deterministic, good enough to spread faults. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ERRORS: Record<"500" | "503", { code: string; message: string }> = {
  "500": { code: "InternalError", message: "We encountered an internal error. Please try again." },
  "503": { code: "SlowDown", message: "Please reduce your request rate." },
};

function s3Error(res: ServerResponse, status: number, code: string, message: string): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>fault-proxy</RequestId></Error>`;
  res.writeHead(status, { "content-type": "application/xml", "content-length": Buffer.byteLength(body), connection: "close" });
  res.end(body);
}

/** Changes the byte at `at` of the stream (XOR 0x5a), passing everything else through as it comes. */
function flipAt(at: number): Transform {
  let pos = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (at >= pos && at < pos + chunk.length) {
        const copy = Buffer.from(chunk);
        copy[at - pos] = copy[at - pos]! ^ 0x5a;
        chunk = copy;
      }
      pos += chunk.length;
      cb(null, chunk);
    },
  });
}

/**
 * A plain HTTP proxy between an S3 client and an S3 server on 127.0.0.1 that fails a seeded-random share of requests:
 * an S3 error answer (500 InternalError, 503 SlowDown) after reading the request body, or a connection destroyed
 * before any answer. The other requests pass through unchanged (the Host header too, so signatures stay valid),
 * unless they match loseBodyOf or flipByteOf; conditionalWrites adds If-None-Match to a server that lacks it.
 */
export async function startFaultProxy(target: string, o: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(target);
  const random = prng(o.seed ?? 1);
  const kinds = o.faults ?? ["500", "503", "reset"];
  let rate = o.rate;
  let nth = 0;
  const requests: RecordedRequest[] = [];

  /** Per multipart upload: the MD5 (hex) the server gave each part, by part number (see opaquePartEtags). */
  const partMd5s = new Map<string, Map<number, string>>();
  /** Per completed object (its path): the server's own ETag and the AWS-form one that replaces it in answers. */
  const composites = new Map<string, { server: string; shown: string }>();

  /** The server's answer to `req`, with the ETags opaquePartEtags calls for. */
  function answer(req: IncomingMessage, res: ServerResponse, ures: IncomingMessage): void {
    const url = new URL(req.url ?? "/", "http://proxy");
    const uploadId = url.searchParams.get("uploadId");
    const status = ures.statusCode ?? 502;
    if (o.opaquePartEtags && uploadId && status === 200 && req.method === "PUT" && url.searchParams.has("partNumber")) {
      const md5 = String(ures.headers.etag ?? "").replace(/"/g, "");
      const parts = partMd5s.get(uploadId) ?? new Map<number, string>();
      parts.set(Number(url.searchParams.get("partNumber")), md5);
      partMd5s.set(uploadId, parts);
      res.writeHead(status, { ...ures.headers, etag: `"${randomBytes(24).toString("base64")}"` });
      ures.pipe(res);
      return;
    }
    if (o.opaquePartEtags && uploadId && status === 200 && req.method === "POST") {
      const chunks: Buffer[] = [];
      ures.on("data", (c: Buffer) => chunks.push(c));
      ures.on("end", () => {
        const parts = [...(partMd5s.get(uploadId) ?? new Map<number, string>()).entries()].sort((a, b) => a[0] - b[0]);
        const etag = `${createHash("md5").update(Buffer.concat(parts.map(([, m]) => Buffer.from(m, "hex")))).digest("hex")}-${parts.length}`;
        const text = Buffer.concat(chunks).toString();
        const server = /<ETag>(?:&quot;|")?([0-9a-f]{32})/.exec(text)?.[1];
        if (server) composites.set(url.pathname, { server, shown: etag });
        const body = text.replace(/<ETag>[^<]*<\/ETag>/, `<ETag>&quot;${etag}&quot;</ETag>`);
        const headers = { ...ures.headers, "content-length": String(Buffer.byteLength(body)) };
        delete headers["transfer-encoding"];
        res.writeHead(status, headers);
        res.end(body);
      });
      return;
    }
    const composite = composites.get(url.pathname);
    if (o.opaquePartEtags && composite && (req.method === "HEAD" || req.method === "GET") && String(ures.headers.etag ?? "").includes(composite.server)) {
      res.writeHead(status, { ...ures.headers, etag: `"${composite.shown}"` });
      ures.pipe(res);
      return;
    }
    res.writeHead(status, ures.headers);
    ures.pipe(res);
  }

  /** Per key: the tail of the chain of conditional writes to it (see conditionalWrites). */
  const keyLocks = new Map<string, Promise<void>>();

  function forward(req: IncomingMessage, res: ServerResponse, rec: RecordedRequest): Promise<void> {
    return new Promise<void>((done) => {
      let body: NodeJS.ReadableStream = req;
      const flip = o.flipByteOf;
      if (flip && flip.times > 0 && req.method === flip.method && flip.path.test(decodeURIComponent(req.url ?? ""))) {
        flip.times--;
        rec.fault = "flipped-byte";
        const length = Number(req.headers["content-length"] ?? 0);
        const at = flip.offset ?? Math.floor(length / 2);
        if (flip.checkMd5) {
          const md5 = createHash("md5");
          req.pipe(flipAt(at)).on("data", (c: Buffer) => md5.update(c)).on("end", () => {
            const sent = req.headers["content-md5"];
            if (sent && sent !== md5.digest("base64")) s3Error(res, 400, "BadDigest", "The Content-MD5 you specified did not match what we received.");
            else s3Error(res, 500, "InternalError", "the fault proxy changed a byte of a request without Content-MD5");
            done();
          });
          return;
        }
        body = req.pipe(flipAt(at));
      }
      const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (ures) => {
        answer(req, res, ures);
        ures.on("error", () => res.destroy());
        ures.on("end", () => done());
        ures.on("close", () => done());
      });
      up.on("error", () => {
        res.destroy();
        done();
      });
      req.on("error", () => up.destroy());
      body.pipe(up);
    });
  }

  /** HEAD of the request's object upstream, signed as the request was (s3rver does not verify SigV4 signatures). */
  function exists(req: IncomingMessage, path: string): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      const headers: IncomingHttpHeaders = { ...req.headers };
      for (const h of ["content-length", "content-md5", "content-type", "transfer-encoding", "if-none-match", "expect"]) delete headers[h];
      for (const h of Object.keys(headers)) if (h.startsWith("x-amz-checksum") || h === "x-amz-sdk-checksum-algorithm") delete headers[h];
      const head = httpRequest({ host: upstream.hostname, port: upstream.port, method: "HEAD", path, headers }, (r) => {
        r.resume();
        resolve(r.statusCode === 200);
      });
      head.on("error", reject);
      head.end();
    });
  }

  /** PutObject (no partNumber) or CompleteMultipartUpload (POST with uploadId) with If-None-Match: *. */
  function conditional(req: IncomingMessage): string | undefined {
    if (!o.conditionalWrites || req.headers["if-none-match"] !== "*") return undefined;
    const url = new URL(req.url ?? "/", "http://proxy");
    const put = req.method === "PUT" && !url.searchParams.has("partNumber") && !req.headers["x-amz-copy-source"];
    const complete = req.method === "POST" && url.searchParams.has("uploadId");
    return put || complete ? url.pathname : undefined;
  }

  async function conditionalWrite(req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, path: string): Promise<void> {
    const before = keyLocks.get(path) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = before.then(() => mine);
    keyLocks.set(path, tail);
    await before;
    try {
      if (await exists(req, path)) {
        rec.fault = "precondition-failed";
        req.resume();
        await new Promise<void>((r) => req.on("end", () => r()));
        s3Error(res, 412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold");
        return;
      }
      await forward(req, res, rec);
    } catch {
      res.destroy();
    } finally {
      release();
      if (keyLocks.get(path) === tail) keyLocks.delete(path);
    }
  }

  const server: Server = createServer((req, res) => {
    const rec: RecordedRequest = { method: req.method ?? "GET", url: req.url ?? "/", headers: req.headers };
    requests.push(rec);
    if (random() < rate) {
      const fault = kinds[nth++ % kinds.length] ?? "500";
      rec.fault = fault;
      if (fault === "reset") {
        req.socket.destroy();
        return;
      }
      const e = ERRORS[fault];
      req.resume();
      req.on("end", () => {
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${e.code}</Code><Message>${e.message}</Message><RequestId>fault-proxy</RequestId></Error>`;
        res.writeHead(Number(fault), { "content-type": "application/xml", "content-length": Buffer.byteLength(body), connection: "close" });
        res.end(body);
      });
      return;
    }
    const lose = o.loseBodyOf;
    if (lose && lose.times > 0 && req.method === lose.method && lose.path.test(decodeURIComponent(req.url ?? ""))) {
      lose.times--;
      rec.fault = "lost-body";
      req.resume();
      const headers: IncomingHttpHeaders = { ...req.headers, "content-length": "0" };
      delete headers["content-md5"];
      delete headers["transfer-encoding"];
      const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (ures) => {
        res.writeHead(ures.statusCode ?? 502, ures.headers);
        ures.pipe(res);
      });
      up.on("error", () => res.destroy());
      req.on("end", () => up.end());
      return;
    }
    const path = conditional(req);
    if (path !== undefined) void conditionalWrite(req, res, rec, path);
    else void forward(req, res, rec);
  });
  // Keep-alive sockets of clients must not hold stop() up.
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    requests,
    setRate(r: number) {
      rate = r;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
