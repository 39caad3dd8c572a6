import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

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
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  fault?: Fault | "lost-body";
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

/**
 * A plain HTTP proxy between an S3 client and an S3 server on 127.0.0.1 that fails a seeded-random share of requests:
 * an S3 error answer (500 InternalError, 503 SlowDown) after reading the request body, or a connection destroyed
 * before any answer. The other requests pass through unchanged (the Host header too, so signatures stay valid).
 */
export async function startFaultProxy(target: string, o: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(target);
  const random = prng(o.seed ?? 1);
  const kinds = o.faults ?? ["500", "503", "reset"];
  let rate = o.rate;
  let nth = 0;
  const requests: RecordedRequest[] = [];

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
    const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (ures) => {
      res.writeHead(ures.statusCode ?? 502, ures.headers);
      ures.pipe(res);
      ures.on("error", () => res.destroy());
    });
    up.on("error", () => res.destroy());
    req.on("error", () => up.destroy());
    req.pipe(up);
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
