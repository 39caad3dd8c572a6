import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type CompleteMultipartUploadCommandOutput,
  type CreateMultipartUploadCommandOutput,
  type PutObjectCommandOutput,
  type UploadPartCommandOutput,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  type PutObjectCommandInput,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { createHash, randomBytes } from "node:crypto";
import { STATUS_CODES } from "node:http";
import { Readable } from "node:stream";
import { DbkeepError } from "../../core/errors.js";
import { redact, type Secret } from "../../core/redact.js";
import type { PutOptions, Store, StoreObject } from "../store.js";
import type { S3StoreOptions } from "./plugin.js";

export { s3StoreSchema, type S3StoreConfig, type S3StoreOptions } from "./plugin.js";

const MIB = 1024 * 1024;
export const DEFAULT_PART_SIZE = 8 * MIB;
export const DEFAULT_UPLOAD_CONCURRENCY = 2;
export const DEFAULT_MAX_ATTEMPTS = 5;
const MAX_PARTS = 10_000;
const MAX_PART_SIZE = 5 * 1024 * MIB;
/** Parts double in size every this many parts, so that a stream of unknown size is not limited to part_size x 10,000. */
const PARTS_PER_SIZE = 2000;
const DELETE_BATCH = 1000;
/** Incomplete multipart uploads are listed as `<dir>/.<name><PARTIAL_MARK><uploadId>`, the shape the local store uses. */
const PARTIAL_MARK = ".dbkeep-partial-";
/** Sends of one part (or single PUT) whose checksum did not match, before the upload fails. */
const CHECKSUM_ATTEMPTS = 2;

export interface S3StoreContext {
  /** "s3:<configured name>" */
  name: string;
  accessKey?: Secret | undefined;
  secretKey?: Secret | undefined;
  warn?: (message: string) => void;
}

const NOT_FOUND = new Set(["NoSuchKey", "NotFound", "NoSuchUpload"]);
const CREDENTIALS = new Set(["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "CredentialsProviderError", "AllAccessDisabled", "InvalidClientTokenId"]);
const THROTTLING = new Set(["ConditionalRequestConflict", "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "ServiceUnavailable", "InternalError", "RequestLimitExceeded", "TooManyRequestsException", "TimeoutError"]);
const NETWORK = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ECONNABORTED", "ERR_STREAM_PREMATURE_CLOSE"]);
/** Answers of servers that do not implement an optional call (s3rver has no ListMultipartUploads nor AbortMultipartUpload). */
const UNSUPPORTED = new Set(["NotImplemented", "MethodNotAllowed"]);

interface SdkError {
  name?: string;
  Code?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

function errorCode(err: unknown): string {
  const e = err as SdkError;
  return e?.Code ?? (typeof e?.code === "string" ? e.code : undefined) ?? e?.name ?? "Error";
}

function httpStatus(err: unknown): number | undefined {
  return (err as SdkError)?.$metadata?.httpStatusCode;
}

function isUnsupported(err: unknown): boolean {
  const status = httpStatus(err);
  return UNSUPPORTED.has(errorCode(err)) || status === 501 || status === 405;
}

/** The service refused a body whose Content-MD5 (or flexible checksum) did not match what it received. */
function isBadDigest(err: unknown): boolean {
  return ["BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch", "XAmzContentSHA256Mismatch"].includes(errorCode(err));
}

function isPreconditionFailed(err: unknown): boolean {
  return errorCode(err) === "PreconditionFailed" || httpStatus(err) === 412;
}

/** An ETag without its quotes, lower case. */
function cleanEtag(etag: string | undefined): string {
  return (etag ?? "").replace(/"/g, "").trim().toLowerCase();
}

/** An ETag of the form S3 gives objects: an MD5 in hex, or for a multipart object an MD5 and "-<parts>". */
function md5Like(etag: string | undefined): boolean {
  return /^[0-9a-f]{32}(-\d+)?$/.test(cleanEtag(etag));
}

/** Objects encrypted with KMS keys or customer keys have ETags that are not the MD5 of their data. */
function encrypted(out: { ServerSideEncryption?: string | undefined; SSECustomerAlgorithm?: string | undefined }): boolean {
  return (out.ServerSideEncryption ?? "").startsWith("aws:kms") || Boolean(out.SSECustomerAlgorithm);
}

/** Whether the service honours `If-None-Match: *` on PutObject and on CompleteMultipartUpload. */
interface Conditional {
  put: boolean;
  complete: boolean;
}

/**
 * A bucket on S3 or any S3-compatible service. Bodies are streamed with multipart uploads whose memory is bounded by
 * part_size x (upload_concurrency + 1); a failed or cancelled upload is aborted, a small body is one atomic PutObject,
 * and the size the service reports afterwards must equal the bytes sent.
 */
export function createS3Store(opts: S3StoreOptions, ctx: S3StoreContext): Store {
  const { name } = ctx;
  const bucket = opts.bucket;
  const root = normalisePrefix(opts.prefix);
  const partSize = opts.part_size ?? DEFAULT_PART_SIZE;
  const queueSize = opts.upload_concurrency ?? DEFAULT_UPLOAD_CONCURRENCY;
  const pageSize = opts.list_page_size ?? 1000;
  const deleteBatch = Math.min(DELETE_BATCH, pageSize);
  const owner = opts.expected_bucket_owner ? { ExpectedBucketOwner: opts.expected_bucket_owner } : {};
  const warnOnce = new Set<string>();
  const warn = (m: string) => {
    if (warnOnce.has(m)) return;
    warnOnce.add(m);
    ctx.warn?.(m);
  };

  if (Boolean(ctx.accessKey) !== Boolean(ctx.secretKey)) {
    throw new DbkeepError("CONFIG_INVALID", `[store:${name}] give both access_key and secret_key (or neither, for the default AWS credential chain)`, {
      hint: "set access_key_env and secret_key_env (or the _file variants)",
    });
  }

  const config: S3ClientConfig = {
    region: opts.region ?? (opts.endpoint ? "us-east-1" : (process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1")),
    maxAttempts: opts.max_attempts ?? DEFAULT_MAX_ATTEMPTS,
    retryMode: "standard",
    // A bucket in another region than the one configured still works on AWS (the SDK follows the redirect once).
    followRegionRedirects: !opts.endpoint,
    requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000, httpsAgent: { keepAlive: true, maxSockets: queueSize + 4 }, httpAgent: { keepAlive: true, maxSockets: queueSize + 4 } },
  };
  if (opts.endpoint) {
    config.endpoint = opts.endpoint;
    config.forcePathStyle = opts.force_path_style ?? true;
  } else if (opts.force_path_style !== undefined) {
    config.forcePathStyle = opts.force_path_style;
  }
  if (ctx.accessKey && ctx.secretKey) {
    config.credentials = { accessKeyId: ctx.accessKey.reveal(), secretAccessKey: ctx.secretKey.reveal() };
  }
  // The SDK warns on every run under Node 20 about its releases of 2027; it says nothing about this one.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  const client = new S3Client(config);
  const where = `bucket ${bucket}${opts.endpoint ? ` at ${redact(opts.endpoint)}` : ""}`;

  function objectKey(key: string): string {
    if (key === "" || key.startsWith("/") || key.split("/").some((s) => s === ".." || s === ".")) {
      throw new DbkeepError("STORE_FAILED", `[store:${name}] invalid key "${key}"`);
    }
    return root + key;
  }

  function fail(action: string, key: string, err: unknown): DbkeepError {
    if (err instanceof DbkeepError) return err;
    const code = errorCode(err);
    const status = httpStatus(err);
    const raw = ((err as SdkError)?.message ?? String(err)).split("\n")[0] ?? "";
    // HEAD answers have no body, hence no error code: the HTTP status is all there is.
    const bodiless = /^(Unknown|UnknownError|\d{3})$/.test(code) || raw === "UnknownError";
    const detail = redact(bodiless && status ? `HTTP ${status} ${STATUS_CODES[status] ?? ""}`.trim() : raw && raw !== code ? `${code}: ${raw}` : status ? `${code} (HTTP ${status})` : code);
    const what = `[store:${name}] ${action}${key ? ` ${key}` : ""} failed`;
    if (NOT_FOUND.has(code) || (status === 404 && code !== "NoSuchBucket")) {
      return new DbkeepError("STORE_NOT_FOUND", `[store:${name}] ${key} not found`, { cause: err });
    }
    if (code === "NoSuchBucket") {
      return new DbkeepError("STORE_FAILED", `${what}: bucket ${bucket} does not exist${opts.endpoint ? ` at ${redact(opts.endpoint)}` : ""}`, {
        cause: err,
        hint: "check bucket, endpoint and region; dbkeep does not create buckets",
      });
    }
    if (CREDENTIALS.has(code) || status === 403) {
      const creds = ctx.accessKey ? `access_key/secret_key${opts.access_key_env ? ` (${opts.access_key_env}, ${opts.secret_key_env ?? "secret_key"})` : ""}` : "the default AWS credential chain (environment, profile, instance role)";
      const owner = opts.expected_bucket_owner ? `; or ${bucket} is not owned by account ${opts.expected_bucket_owner} (expected_bucket_owner)` : "";
      return new DbkeepError("STORE_FAILED", `${what}: ${detail}`, { cause: err, hint: `check the credentials from ${creds} and their permissions on ${where}${owner}` });
    }
    if (code === "PermanentRedirect" || status === 301 || code === "AuthorizationHeaderMalformed" || code === "IllegalLocationConstraintException") {
      return new DbkeepError("STORE_FAILED", `${what}: ${detail}`, { cause: err, hint: `set region to the bucket's region (now ${String(config.region)})` });
    }
    const network = NETWORK.has(code) || NETWORK.has(String((err as { cause?: { code?: unknown } })?.cause?.code ?? ""));
    const retryable = network || THROTTLING.has(code) || (status !== undefined && (status >= 500 || status === 429)) || Boolean((err as SdkError)?.$retryable);
    return new DbkeepError("STORE_FAILED", `${what}: ${detail}`, {
      cause: err,
      retryable,
      ...(network ? { hint: `check that ${opts.endpoint ? redact(opts.endpoint) : "S3"} is reachable` } : {}),
    });
  }

  const verifyEtag = opts.verify_etag ?? true;

  /**
   * "match" when the ETag is the MD5 sent, "mismatch" when it is an MD5 and another one, "unknown" when it is no MD5
   * digest (encryption with KMS or customer keys, services whose ETags are something else) or verify_etag is off.
   */
  function compareEtag(etag: string | undefined, md5: string, out: { ServerSideEncryption?: string | undefined; SSECustomerAlgorithm?: string | undefined }): "match" | "mismatch" | "unknown" {
    const e = cleanEtag(etag);
    if (!verifyEtag || encrypted(out) || !/^[0-9a-f]{32}$/.test(e)) return "unknown";
    return e === md5 ? "match" : "mismatch";
  }

  const warnEtags = () => warn(`[store:${name}] the service's ETags are not MD5 digests: uploads to it are checked by their size and by the service's own check of Content-MD5 only`);

  function corrupted(key: string, what: string, cause?: unknown, deleted = false): DbkeepError {
    return new DbkeepError("STORE_FAILED", `[store:${name}] upload of ${key} failed: ${what}; ${deleted ? "the object was deleted" : "nothing was stored"}`, {
      retryable: true,
      hint: "data changed between dbkeep and the service (a proxy, a network device or the service itself); if the service's ETags are known not to be MD5 digests, set verify_etag: false",
      ...(cause === undefined ? {} : { cause }),
    });
  }

  function sizeMismatch(key: string, stored: number | undefined, sent: number): DbkeepError {
    return new DbkeepError("STORE_FAILED", `[store:${name}] upload of ${key} is ${stored ?? "?"} bytes on the server but ${sent} were sent; the object was deleted`, { retryable: true });
  }

  async function exists(Key: string, abortSignal?: AbortSignal): Promise<boolean> {
    try {
      await client.send(new HeadObjectCommand({ Bucket: bucket, Key, ...owner }), abortSignal ? { abortSignal } : {});
      return true;
    } catch (err) {
      if (NOT_FOUND.has(errorCode(err)) || httpStatus(err) === 404) return false;
      throw err;
    }
  }

  /**
   * Services differ: AWS S3 (since 2024) and MinIO refuse a PutObject or CompleteMultipartUpload with
   * `If-None-Match: *` for a key that exists (412), others ignore the header and replace the object. Found out once
   * per store, at the first put with ifAbsent, by writing a probe object twice each way.
   */
  let conditional: Promise<Conditional> | undefined;
  let conditionalKnown: Conditional | undefined;
  function conditionalSupport(): Promise<Conditional> {
    conditional ??= detectConditional().then(
      (c) => (conditionalKnown = c),
      (err: unknown) => {
        conditional = undefined;
        throw err;
      },
    );
    return conditional;
  }

  async function detectConditional(): Promise<Conditional> {
    const probe = `.dbkeep-probe/conditional-${randomBytes(6).toString("hex")}`;
    const Key = objectKey(probe);
    const result: Conditional = { put: false, complete: false };
    // A service that rejects the header itself (400/501) is one that does not honour it: it is never sent there.
    const rejected = (err: unknown) => isUnsupported(err) || (httpStatus(err) === 400 && !isBadDigest(err));
    const put = () => client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: Buffer.alloc(0), ContentLength: 0, IfNoneMatch: "*", ...owner }));
    try {
      try {
        await put();
      } catch (err) {
        if (rejected(err)) return result;
        throw err;
      }
      try {
        await put();
      } catch (err) {
        if (isPreconditionFailed(err)) result.put = true;
        else if (!rejected(err)) throw err;
      }
      let uploadId: string | undefined;
      try {
        const checksums = (await client.config.requestChecksumCalculation()) === "WHEN_SUPPORTED";
        uploadId = (await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key, ...owner, ...(checksums ? { ChecksumAlgorithm: "CRC32" as const } : {}) }))).UploadId;
        const one = Buffer.from("x");
        const out = await client.send(new UploadPartCommand({ Bucket: bucket, Key, UploadId: uploadId, PartNumber: 1, Body: one, ContentLength: 1, ...owner }));
        const Parts = [{ PartNumber: 1, ETag: out.ETag, ...(out.ChecksumCRC32 ? { ChecksumCRC32: out.ChecksumCRC32 } : {}) }];
        await client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key, UploadId: uploadId, MultipartUpload: { Parts }, IfNoneMatch: "*", ...owner }));
        uploadId = undefined;
      } catch (err) {
        if (isPreconditionFailed(err)) result.complete = true;
        else if (!rejected(err)) throw err;
      } finally {
        if (uploadId) await abortUpload(Key, uploadId).catch(() => undefined);
      }
    } catch (err) {
      throw fail("check of conditional writes (If-None-Match) with", probe, err);
    } finally {
      await store.delete([probe]).catch(() => undefined);
    }
    return result;
  }

  async function abortUpload(key: string, uploadId: string): Promise<void> {
    try {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, ...owner }));
    } catch (err) {
      if (NOT_FOUND.has(errorCode(err))) return;
      throw err;
    }
  }

  async function* listUploads(prefix: string): AsyncIterable<StoreObject> {
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: root + prefix, MaxUploads: pageSize, KeyMarker, UploadIdMarker, ...owner }));
      } catch (err) {
        if (isUnsupported(err) || errorCode(err) === "AccessDenied") {
          warn(`[store:${name}] cannot list incomplete multipart uploads (${errorCode(err)}); leftovers of killed uploads are not shown (a lifecycle rule AbortIncompleteMultipartUpload removes them)`);
          return;
        }
        throw fail("list uploads under", prefix, err);
      }
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId || !u.Key.startsWith(root)) continue;
        const logical = u.Key.slice(root.length);
        const slash = logical.lastIndexOf("/");
        yield {
          key: `${logical.slice(0, slash + 1)}.${logical.slice(slash + 1)}${PARTIAL_MARK}${u.UploadId}`,
          size: 0,
          modified: u.Initiated ?? new Date(0),
          partial: true,
        };
      }
      if (!page.IsTruncated) return;
      KeyMarker = page.NextKeyMarker;
      UploadIdMarker = page.NextUploadIdMarker;
      if (!KeyMarker && !UploadIdMarker) return;
    }
  }

  const store: Store = {
    name,

    get atomicCreate() {
      return conditionalKnown?.put === true && conditionalKnown.complete === true;
    },

    async put(key: string, body: Readable, putOpts: PutOptions = {}) {
      const Key = objectKey(key);
      const signal = putOpts.signal;
      const ifAbsent = putOpts.ifAbsent === true;
      // The body may be destroyed (cancelled) before it is read: its error is this put's to report, never unhandled.
      body.on("error", () => undefined);
      // Aborts the requests in flight when the put is cancelled or one of its parts fails.
      const requests = new AbortController();
      const onAbort = () => {
        requests.abort();
        body.destroy(Object.assign(new Error("upload cancelled"), { name: "AbortError" }));
      };
      if (signal?.aborted) onAbort();
      else signal?.addEventListener("abort", onAbort, { once: true });
      const send = <T>(command: unknown) => client.send(command as never, { abortSignal: requests.signal }) as Promise<T>;
      const alreadyExists = () => new DbkeepError("ALREADY_EXISTS", `[store:${name}] ${key} already exists`);
      /** Publishing with ifAbsent: the header where the service honours it, else a check just before. */
      const guard = async (honoured: boolean | undefined): Promise<{ IfNoneMatch?: string }> => {
        if (!ifAbsent) return {};
        if (honoured) return { IfNoneMatch: "*" };
        if (await exists(Key, requests.signal)) throw alreadyExists();
        return {};
      };
      const published = <T>(p: Promise<T>): Promise<T> =>
        p.catch((err: unknown) => {
          throw ifAbsent && isPreconditionFailed(err) ? alreadyExists() : err;
        });

      // S3 allows 10,000 parts: a known size picks a part size that fits; for an unknown one, parts double in size every
      // 2,000 parts (8 MiB parts reach 16 GiB at the first doubling, about 500 GiB in all).
      const size = putOpts.size;
      const part = size !== undefined && size > partSize * MAX_PARTS ? Math.ceil(size / MAX_PARTS / MIB) * MIB : partSize;
      const sizeOfPart = (n: number) => Math.min(MAX_PART_SIZE, part * 2 ** Math.floor((n - 1) / PARTS_PER_SIZE));
      const buffers = new PartBuffers(part, queueSize + 1);
      const create = {
        Bucket: bucket,
        Key,
        ...owner,
        ...(opts.storage_class ? { StorageClass: opts.storage_class as PutObjectCommandInput["StorageClass"] } : {}),
        ...(opts.sse ? { ServerSideEncryption: opts.sse } : {}),
        ...(opts.sse_kms_key_id ? { SSEKMSKeyId: opts.sse_kms_key_id } : {}),
      };
      let bytes = 0;
      let uploadId: string | undefined;
      let partNo = 0;
      let failure: unknown;
      const parts: CompletedPart[] = [];
      /** MD5 of each part, by part number - 1: a multipart object's ETag is the MD5 of their concatenation, "-N". */
      const partDigests: Buffer[] = [];
      let partsVerified = 0;
      const inflight = new Set<Promise<void>>();

      /** One part, sent with its Content-MD5; a part the service refuses (BadDigest) or stored otherwise goes once more. */
      const uploadPart = async (PartNumber: number, data: Buffer, digest: Buffer): Promise<UploadPartCommandOutput> => {
        for (let attempt = 1; ; attempt++) {
          let out: UploadPartCommandOutput;
          try {
            out = await send<UploadPartCommandOutput>(
              new UploadPartCommand({ Bucket: bucket, Key, UploadId: uploadId, PartNumber, Body: data, ContentLength: data.length, ContentMD5: digest.toString("base64"), ...owner }),
            );
          } catch (err) {
            if (isBadDigest(err) && attempt < CHECKSUM_ATTEMPTS) continue;
            if (isBadDigest(err)) throw corrupted(key, `part ${PartNumber} arrived changed ${CHECKSUM_ATTEMPTS} times (the service answered ${errorCode(err)})`, err);
            throw err;
          }
          const verdict = compareEtag(out.ETag, digest.toString("hex"), out);
          if (verdict === "match") partsVerified++;
          if (verdict !== "mismatch") return out;
          if (attempt >= CHECKSUM_ATTEMPTS) {
            throw corrupted(key, `part ${PartNumber} arrived changed ${CHECKSUM_ATTEMPTS} times (the service's ETag ${cleanEtag(out.ETag)} is not the MD5 ${digest.toString("hex")} of the bytes sent)`);
          }
        }
      };

      const sendPart = (buf: Buffer, length: number, digest: Buffer) => {
        const PartNumber = ++partNo;
        if (PartNumber > MAX_PARTS) {
          throw new DbkeepError("STORE_FAILED", `[store:${name}] upload of ${key} needs more than ${MAX_PARTS} parts`, { hint: "raise part_size" });
        }
        partDigests[PartNumber - 1] = digest;
        const p = uploadPart(PartNumber, buf.subarray(0, length), digest)
          .then((out) => {
            parts.push({ PartNumber, ETag: out.ETag, ...(out.ChecksumCRC32 ? { ChecksumCRC32: out.ChecksumCRC32 } : {}) });
          })
          .catch((err: unknown) => {
            failure ??= err;
            requests.abort();
          })
          .finally(() => {
            buffers.release(buf);
            inflight.delete(p);
          });
        inflight.add(p);
      };

      try {
        const conditional = ifAbsent ? await conditionalSupport() : undefined;
        let buf = await buffers.take();
        let fill = 0;
        // The MD5 of the part being filled grows as data is copied in: no second pass over the part, and no long
        // stretch of hashing on the event loop.
        let md5 = createHash("md5");
        for await (const data of body) {
          const chunk = typeof data === "string" ? Buffer.from(data) : (data as Buffer);
          let off = 0;
          while (off < chunk.length) {
            if (failure) throw failure;
            // A full buffer is sent only once more data comes: a body of at most one part is a single PutObject.
            if (fill === buf.length) {
              if (!uploadId) {
                const checksums = (await client.config.requestChecksumCalculation()) === "WHEN_SUPPORTED";
                uploadId = (await send<CreateMultipartUploadCommandOutput>(new CreateMultipartUploadCommand({ ...create, ...(checksums ? { ChecksumAlgorithm: "CRC32" as const } : {}) }))).UploadId;
              }
              sendPart(buf, fill, md5.digest());
              md5 = createHash("md5");
              buffers.resize(sizeOfPart(partNo + 1));
              buf = await buffers.take();
              fill = 0;
              if (failure) throw failure;
            }
            const n = Math.min(chunk.length - off, buf.length - fill);
            chunk.copy(buf, fill, off, off + n);
            md5.update(chunk.subarray(off, off + n));
            fill += n;
            off += n;
            bytes += n;
          }
        }
        if (signal?.aborted) throw new Error("upload cancelled");
        /**
         * What the service holds under the key now: "ok" (our object, of the size sent), "short" (our object, of another
         * size) or "contested" (none, or another writer's: its ETag is not the one our request got).
         */
        const stored = async (etag: string | undefined): Promise<{ state: "ok" | "short" | "contested"; size?: number | undefined }> => {
          let h;
          try {
            h = await client.send(new HeadObjectCommand({ Bucket: bucket, Key, ...owner }), { abortSignal: requests.signal });
          } catch (err) {
            if (NOT_FOUND.has(errorCode(err)) || httpStatus(err) === 404) return { state: "contested" };
            throw err;
          }
          // Compared only as MD5-style ETags, which name content: some services' other ETags need not agree between
          // the answer to a write and a later HeadObject.
          if (md5Like(h.ETag) && md5Like(etag) && cleanEtag(h.ETag) !== cleanEtag(etag)) return { state: "contested" };
          return { state: h.ContentLength === bytes ? "ok" : "short", size: h.ContentLength };
        };
        // Another writer replaced or removed the object between our request and the check: with ifAbsent that
        // writer won the key; otherwise there is nothing of ours to check or to delete.
        const contested = () =>
          ifAbsent
            ? alreadyExists()
            : new DbkeepError("STORE_FAILED", `[store:${name}] ${key} was replaced or deleted by another writer while it was uploaded`, { retryable: true });
        if (!uploadId) {
          // A single PUT still has the whole body in hand: a body the service refused as changed on the way
          // (BadDigest), or stored with another size or MD5 (seen with S3-compatible servers under load), is sent
          // once more before the upload counts as failed.
          const digest = md5.digest();
          for (let attempt = 1; ; attempt++) {
            let out;
            try {
              out = await published(send<PutObjectCommandOutput>(new PutObjectCommand({ ...create, Body: buf.subarray(0, fill), ContentLength: fill, ContentMD5: digest.toString("base64"), ...(await guard(conditional?.put)) })));
            } catch (err) {
              if (isBadDigest(err) && attempt < CHECKSUM_ATTEMPTS) continue;
              if (isBadDigest(err)) throw corrupted(key, `the body arrived changed ${CHECKSUM_ATTEMPTS} times (the service answered ${errorCode(err)})`, err);
              throw err;
            }
            const verdict = compareEtag(out.ETag, digest.toString("hex"), out);
            if (verdict === "unknown" && verifyEtag && !encrypted(out)) warnEtags();
            const now = await stored(out.ETag);
            if (now.state === "contested") throw contested();
            if (now.state === "ok" && verdict !== "mismatch") break;
            // What the service keeps is not what was sent: it goes, and the body is sent once more.
            await store.delete([key]).catch(() => undefined);
            if (attempt >= CHECKSUM_ATTEMPTS) {
              if (now.state === "short") throw sizeMismatch(key, now.size, bytes);
              throw corrupted(key, `the service's ETag ${cleanEtag(out.ETag)} is not the MD5 ${digest.toString("hex")} of the bytes sent, ${CHECKSUM_ATTEMPTS} times`, undefined, true);
            }
          }
          buffers.release(buf);
        } else {
          sendPart(buf, fill, md5.digest());
          while (inflight.size > 0) await Promise.all([...inflight]);
          if (failure) throw failure;
          parts.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
          const out = await published(
            send<CompleteMultipartUploadCommandOutput>(new CompleteMultipartUploadCommand({ Bucket: bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: parts }, ...owner, ...(await guard(conditional?.complete)) })),
          );
          uploadId = undefined;
          const expected = `${createHash("md5").update(Buffer.concat(partDigests)).digest("hex")}-${parts.length}`;
          const etag = cleanEtag(out.ETag);
          // "<md5 of the parts' MD5s>-<parts>" on AWS and most services; a service that gives the whole object's MD5
          // instead (s3rver) cannot be compared without hashing everything once more, but then every part was.
          const composite = /^[0-9a-f]{32}-\d+$/.test(etag) && !encrypted(out) && verifyEtag;
          if (composite && etag !== expected) {
            await store.delete([key]).catch(() => undefined);
            throw corrupted(key, `the service's ETag ${etag} of the completed object is not ${expected}, the MD5 of the ${parts.length} parts sent`, undefined, true);
          }
          if (!composite && partsVerified < parts.length && verifyEtag && !encrypted(out)) {
            warnEtags();
          }
          const now = await stored(out.ETag);
          if (now.state === "contested") throw contested();
          if (now.state === "short") {
            await store.delete([key]).catch(() => undefined);
            throw sizeMismatch(key, now.size, bytes);
          }
        }
        return { bytes };
      } catch (err) {
        requests.abort();
        while (inflight.size > 0) await Promise.allSettled([...inflight]);
        if (uploadId) {
          await abortUpload(Key, uploadId).catch((e: unknown) =>
            warn(`[store:${name}] could not abort the multipart upload of ${key} (${errorCode(e)}); prune removes it, or a lifecycle rule AbortIncompleteMultipartUpload`),
          );
        }
        if (signal?.aborted) throw new DbkeepError("ABORTED", `[store:${name}] upload of ${key} was cancelled`, { cause: err });
        // An error of the body (e.g. the dump failed) is not the store's fault: pass it through as it is.
        if (body.errored) throw body.errored;
        throw fail("upload of", key, err);
      } finally {
        signal?.removeEventListener("abort", onAbort);
      }
    },

    async get(key: string, getOpts: { signal?: AbortSignal } = {}) {
      try {
        const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey(key), ...owner }), getOpts.signal ? { abortSignal: getOpts.signal } : {});
        if (!(out.Body instanceof Readable)) throw new DbkeepError("STORE_FAILED", `[store:${name}] get ${key} failed: the response has no body stream`);
        return out.Body;
      } catch (err) {
        throw fail("get", key, err);
      }
    },

    async stat(key: string) {
      try {
        const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey(key), ...owner }));
        return { key, size: head.ContentLength ?? 0, modified: head.LastModified ?? new Date(0) };
      } catch (err) {
        const e = fail("stat", key, err);
        if (e.code === "STORE_NOT_FOUND") return undefined;
        throw e;
      }
    },

    async *list(prefix: string): AsyncIterable<StoreObject> {
      let ContinuationToken: string | undefined;
      do {
        let page;
        try {
          page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: root + prefix, MaxKeys: pageSize, ContinuationToken, ...owner }));
        } catch (err) {
          throw fail("list", prefix || "/", err);
        }
        for (const o of page.Contents ?? []) {
          if (!o.Key || !o.Key.startsWith(root) || o.Key.endsWith("/")) continue;
          yield { key: o.Key.slice(root.length), size: o.Size ?? 0, modified: o.LastModified ?? new Date(0) };
        }
        ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (ContinuationToken);
      yield* listUploads(prefix);
    },

    async delete(keys: string[]) {
      const objects: string[] = [];
      for (const key of keys) {
        const partial = parsePartial(key);
        if (partial) {
          try {
            await abortUpload(objectKey(partial.key), partial.uploadId);
          } catch (err) {
            if (!isUnsupported(err)) throw fail("abort upload of", partial.key, err);
          }
        }
        // A partial-looking name may also be an ordinary object: deleting a missing key is harmless.
        objects.push(objectKey(key));
      }
      for (let i = 0; i < objects.length; i += deleteBatch) {
        const batch = objects.slice(i, i + deleteBatch);
        let out;
        try {
          out = await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true }, ...owner }));
        } catch (err) {
          throw fail("delete", `${batch.length} object(s) from ${batch[0]?.slice(root.length)}`, err);
        }
        const errors = (out.Errors ?? []).filter((e) => e.Code !== "NoSuchKey");
        const first = errors[0];
        if (first) {
          throw fail("delete", first.Key?.slice(root.length) ?? "", Object.assign(new Error(`${first.Message ?? first.Code}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ""}`), { Code: first.Code, name: first.Code }));
        }
      }
    },

    async close() {
      client.destroy();
    },
  };
  return store;
}

/**
 * The buffers of one upload: at most `max` of `size` bytes, allocated when first needed and reused, so memory stays
 * at size x max whatever the object's size (fresh buffers per part would leave the garbage collector behind).
 */
class PartBuffers {
  readonly #free: Buffer[] = [];
  readonly #waiting: (() => void)[] = [];
  #allocated = 0;
  constructor(
    private size: number,
    readonly max: number,
  ) {}

  /** Buffers of another size are dropped as they come back. */
  resize(size: number): void {
    if (size === this.size) return;
    this.size = size;
    this.#allocated -= this.#free.length;
    this.#free.length = 0;
  }

  async take(): Promise<Buffer> {
    for (;;) {
      const b = this.#free.pop();
      if (b) return b;
      if (this.#allocated < this.max) {
        this.#allocated++;
        // Pages are touched only as data is copied in: a small body costs little of a large part size.
        return Buffer.allocUnsafeSlow(this.size);
      }
      await new Promise<void>((r) => this.#waiting.push(r));
    }
  }

  release(b: Buffer): void {
    if (b.length === this.size) this.#free.push(b);
    else this.#allocated--;
    this.#waiting.shift()?.();
  }
}

/** "a/b/" for "a/b", "/a/b/" or "a/b/"; "" for none. */
function normalisePrefix(prefix: string | undefined): string {
  const p = (prefix ?? "").replace(/^\/+|\/+$/g, "");
  return p ? `${p}/` : "";
}

function parsePartial(key: string): { key: string; uploadId: string } | undefined {
  const slash = key.lastIndexOf("/");
  const base = key.slice(slash + 1);
  const at = base.indexOf(PARTIAL_MARK);
  if (!base.startsWith(".") || at < 2) return undefined;
  const uploadId = base.slice(at + PARTIAL_MARK.length);
  if (!uploadId) return undefined;
  return { key: key.slice(0, slash + 1) + base.slice(1, at), uploadId };
}

export default createS3Store;
