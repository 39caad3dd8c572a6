/**
 * Real receivers on loopback for the notifier tests: an SMTP server (plain, STARTTLS or implicit TLS, with AUTH)
 * and an HTTP server, both on free ports, recording what arrived as a user would look at it.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerOptions } from "smtp-server";

export interface TestCert {
  key: string;
  cert: string;
  /** The certificate file, which is its own CA: for NODE_EXTRA_CA_CERTS. */
  certFile: string;
  dir: string;
}

/** A self-signed certificate for localhost and 127.0.0.1, made now with openssl. */
export function makeCert(): TestCert {
  const dir = mkdtempSync(join(tmpdir(), "dbkeep-cert-"));
  const key = join(dir, "key.pem");
  const cert = join(dir, "cert.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert], { stdio: "pipe" });
  return { key: readFileSync(key, "utf8"), cert: readFileSync(cert, "utf8"), certFile: cert, dir };
}

export function removeCert(c: TestCert): void {
  rmSync(c.dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------------------------
// SMTP

export interface ReceivedMail {
  envelopeFrom: string;
  envelopeTo: string[];
  headers: Record<string, string>;
  subject: string;
  text: string;
  html: string;
  /** Whether the session was encrypted when the mail was sent (STARTTLS or implicit TLS). */
  secure: boolean;
  /** The AUTH mechanism and user name the client logged in with, if it did. */
  auth?: { method: string; username: string };
  raw: string;
}

export interface SmtpReceiver {
  host: string;
  port: number;
  mails: ReceivedMail[];
  /** Every AUTH attempt, including refused ones. */
  logins: { method: string; username: string; password: string; accepted: boolean }[];
  close(): Promise<void>;
}

export interface SmtpReceiverOptions {
  /** Offer STARTTLS (or, with implicitTls, speak TLS from the first byte) with this certificate. */
  cert?: TestCert;
  implicitTls?: boolean;
  /** Require AUTH with these credentials. */
  credentials?: { username: string; password: string };
  authMethods?: ("PLAIN" | "LOGIN")[];
}

export async function startSmtpReceiver(opts: SmtpReceiverOptions = {}): Promise<SmtpReceiver> {
  const mails: ReceivedMail[] = [];
  const logins: SmtpReceiver["logins"] = [];
  const authed = new Map<string, { method: string; username: string }>();
  const options: SMTPServerOptions = {
    secure: opts.implicitTls ?? false,
    ...(opts.cert ? { key: opts.cert.key, cert: opts.cert.cert } : {}),
    authOptional: !opts.credentials,
    ...(opts.credentials ? { authMethods: opts.authMethods ?? ["PLAIN", "LOGIN"] } : {}),
    // Without a certificate the server does not know STARTTLS at all (smtp-server would otherwise use a built-in one).
    disabledCommands: [...(opts.cert ? [] : ["STARTTLS"]), ...(opts.credentials ? [] : ["AUTH"])],
    // Plain-text AUTH is allowed so that use_tls: false can be tested; the client decides whether to encrypt.
    allowInsecureAuth: true,
    logger: false,
    onAuth(auth: SMTPServerAuthentication, session, callback) {
      const ok = auth.username === opts.credentials?.username && auth.password === opts.credentials?.password;
      logins.push({ method: auth.method, username: auth.username ?? "", password: auth.password ?? "", accepted: ok });
      if (!ok) return callback(Object.assign(new Error("Invalid username or password"), { responseCode: 535 }));
      authed.set(session.id, { method: auth.method, username: auth.username ?? "" });
      callback(null, { user: auth.username });
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        const parsed = parseMail(raw);
        const auth = authed.get(session.id);
        mails.push({
          envelopeFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          envelopeTo: session.envelope.rcptTo.map((r) => r.address),
          ...parsed,
          secure: session.secure,
          ...(auth ? { auth } : {}),
          raw,
        });
        callback();
      });
    },
  };
  const server = new SMTPServer(options);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.server.address() as AddressInfo).port;
  return {
    host: "127.0.0.1",
    port,
    mails,
    logins,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Just enough MIME for what nodemailer writes: headers, multipart/alternative, quoted-printable and base64. */
export function parseMail(raw: string): { headers: Record<string, string>; subject: string; text: string; html: string } {
  const out = { text: "", html: "" };
  const top = splitPart(raw);
  const walk = (part: { headers: Record<string, string>; body: string }) => {
    const type = part.headers["content-type"] ?? "text/plain";
    const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
    if (/^multipart\//i.test(type) && boundary) {
      const pieces = part.body.split(`--${boundary}`).slice(1);
      for (const p of pieces) if (!p.startsWith("--")) walk(splitPart(p.replace(/^\r\n/, "")));
      return;
    }
    const decoded = decodeBody(part.body, part.headers["content-transfer-encoding"] ?? "7bit");
    if (/^text\/html/i.test(type)) out.html += decoded;
    else if (/^text\/plain/i.test(type)) out.text += decoded;
  };
  walk(top);
  return { headers: top.headers, subject: decodeWords(top.headers.subject ?? ""), ...out };
}

function splitPart(s: string): { headers: Record<string, string>; body: string } {
  const i = s.indexOf("\r\n\r\n");
  const head = i < 0 ? s : s.slice(0, i);
  const body = i < 0 ? "" : s.slice(i + 4);
  const headers: Record<string, string> = {};
  for (const line of head.replace(/\r\n[ \t]+/g, " ").split("\r\n")) {
    const c = line.indexOf(":");
    if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
  }
  return { headers, body };
}

function decodeBody(body: string, encoding: string): string {
  const e = encoding.toLowerCase();
  if (e === "base64") return Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8");
  if (e === "quoted-printable") {
    const bytes = body.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
    return Buffer.from(bytes, "latin1").toString("utf8");
  }
  return body;
}

function decodeWords(s: string): string {
  return s.replace(/=\?utf-8\?([bq])\?([^?]*)\?=\s*/gi, (_m, enc: string, data: string) =>
    enc.toLowerCase() === "b" ? Buffer.from(data, "base64").toString("utf8") : decodeBody(data.replace(/_/g, " "), "quoted-printable"),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP

export interface ReceivedRequest {
  method: string;
  /** Path and query, as sent. */
  path: string;
  headers: IncomingHttpHeaders;
  /** The body exactly as it arrived. */
  raw: Buffer;
  body: string;
}

export interface HttpReceiver {
  /** `http://127.0.0.1:PORT` */
  url: string;
  requests: ReceivedRequest[];
  /** Every request since the start, kept through reset(). */
  all: ReceivedRequest[];
  /** The next n requests get this status (and body) instead of 200. */
  answerNext(n: number, status: number, body?: string): void;
  /** The next n requests get no answer at all until the receiver closes. */
  hangNext(n: number): void;
  /** Forgets the requests so far and any planned answers. */
  reset(): void;
  close(): Promise<void>;
}

export async function startHttpReceiver(): Promise<HttpReceiver> {
  const requests: ReceivedRequest[] = [];
  const all: ReceivedRequest[] = [];
  let planned: ({ status: number; body: string } | "hang")[] = [];
  const hanging: ServerResponse[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks);
      const r = { method: req.method ?? "", path: req.url ?? "", headers: req.headers, raw, body: raw.toString("utf8") };
      requests.push(r);
      all.push(r);
      const plan = planned.shift() ?? { status: 200, body: '{"ok":true}' };
      if (plan === "hang") {
        hanging.push(res);
        return;
      }
      res.writeHead(plan.status, { "content-type": "text/plain" }).end(plan.body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    all,
    answerNext(n, status, body = "") {
      for (let i = 0; i < n; i++) planned.push({ status, body });
    },
    hangNext(n) {
      for (let i = 0; i < n; i++) planned.push("hang");
    },
    reset() {
      requests.length = 0;
      planned = [];
    },
    close() {
      for (const r of hanging) r.destroy();
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
