import { existsSync } from "node:fs";
import { addAbortSignal, Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { IdempotencyStrategy, Storage, type StorageOptions } from "@google-cloud/storage";
import { DbkeepError } from "../../core/errors.js";
import { redact } from "../../core/redact.js";
import { VERSION } from "../../core/version.js";
import { MiB, normalisePrefix } from "../size.js";
import type { PutOptions, Store, StoreObject } from "../store.js";
import type { GcsStoreOptions } from "./schema.js";
export { gcsStoreSchema, type GcsStoreOptions } from "./schema.js";

export interface GcsCredentials {
  /** A service-account key (JSON text). */
  credentialsJson?: string | undefined;
}

const DEFAULT_CHUNK_SIZE = 8 * MiB;
const DELETE_CONCURRENCY = 8;
const NETWORK_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "ECONNABORTED", "UND_ERR_SOCKET"]);

interface GcsLikeError {
  code?: number | string;
  status?: number;
  response?: { status?: number };
  message?: string;
  name?: string;
}

function clean(text: string): string {
  return redact(text.split("\n")[0] ?? "")
    .replace(/(https?:\/\/[^\s?"']+)\?[^\s"']*/g, "$1?***")
    .trim();
}

/**
 * Objects in a Google Cloud Storage bucket. put() streams through a resumable upload in requests of `chunk_size`
 * (memory stays near twice that); the object exists only once the last request finalised it, so a failed or aborted
 * put leaves nothing under the key, and its upload session is cancelled. With ifAbsent the upload carries
 * ifGenerationMatch=0, which the service decides when the object would appear (atomicCreate).
 */
export function createGcsStore(opts: GcsStoreOptions, name = `gcs:${opts.bucket}`, creds: GcsCredentials = {}): Store {
  const root = normalisePrefix(opts.prefix);
  const chunkSize = opts.chunk_size ?? DEFAULT_CHUNK_SIZE;
  const attempts = opts.max_attempts ?? 4;
  const where = `bucket "${opts.bucket}"${opts.endpoint ? ` at ${opts.endpoint}` : ""}`;

  const options: StorageOptions = {
    userAgent: `dbkeep/${VERSION}`,
    // The client's default (max_retries 3) applies when maxRetries is 0, so one attempt means autoRetry off.
    retryOptions: { autoRetry: attempts > 1, maxRetries: Math.max(1, attempts - 1), idempotencyStrategy: IdempotencyStrategy.RetryAlways, maxRetryDelay: 32, totalTimeout: 600 },
    ...(opts.project_id ? { projectId: opts.project_id } : {}),
    ...(opts.endpoint ? { apiEndpoint: opts.endpoint.replace(/\/+$/, ""), useAuthWithCustomEndpoint: opts.endpoint_auth ?? false } : {}),
  };
  if (creds.credentialsJson) {
    let parsed: { client_email?: string; private_key?: string; project_id?: string };
    try {
      parsed = JSON.parse(creds.credentialsJson) as typeof parsed;
    } catch {
      throw new DbkeepError("CONFIG_INVALID", `[store:${name}] credentials_json is not valid JSON`, { hint: "give the service-account key file's content (or use credentials_file)" });
    }
    options.credentials = parsed;
    if (!options.projectId && parsed.project_id) options.projectId = parsed.project_id;
  } else if (opts.credentials_file) {
    if (!existsSync(opts.credentials_file)) {
      throw new DbkeepError("CONFIG_INVALID", `[store:${name}] credentials_file ${opts.credentials_file} does not exist`, { hint: "give the path of a service-account key (JSON)" });
    }
    options.keyFilename = opts.credentials_file;
  }
  const storage = new Storage(options);
  const bucket = storage.bucket(opts.bucket);

  function statusOf(err: unknown): number | undefined {
    const e = err as GcsLikeError;
    if (typeof e.code === "number") return e.code;
    return e.response?.status ?? e.status;
  }

  /** GCS answers "The specified bucket does not exist." for a missing bucket, "No such object: ..." for an object. */
  function bucketMissing(err: unknown): boolean {
    return statusOf(err) === 404 && /bucket does not exist/i.test((err as GcsLikeError).message ?? "");
  }

  function fail(action: string, key: string, err: unknown): DbkeepError {
    if (err instanceof DbkeepError) return err;
    const e = err as GcsLikeError;
    const status = statusOf(err);
    const what = `${action}${key ? ` ${key}` : ""}`;
    const detail = clean(e.message || (status ? `HTTP ${status}` : String(err)));
    if (e.name === "AbortError") return new DbkeepError("ABORTED", `[store:${name}] ${what} was cancelled`, { cause: err });
    const credHint = "check the store's credentials_file / credentials_json (or the application default credentials: GOOGLE_APPLICATION_CREDENTIALS); the service account needs roles/storage.objectAdmin on the bucket";
    if (status === 401 || status === 403 || /default credentials|invalid_grant|unauthorized_client|invalid_client/i.test(e.message ?? "")) {
      return new DbkeepError("STORE_FAILED", `[store:${name}] ${what} failed: access denied to ${where}${status ? ` (HTTP ${status})` : ""}: ${detail}`, { cause: err, hint: credHint });
    }
    if (bucketMissing(err)) {
      return new DbkeepError("STORE_FAILED", `[store:${name}] ${what} failed: ${where} does not exist`, { cause: err, hint: `create it (gcloud storage buckets create gs://${opts.bucket}) or fix bucket:` });
    }
    const network = typeof e.code === "string" && NETWORK_CODES.has(e.code);
    const retryable = network || status === undefined || status === 408 || status === 429 || status >= 500;
    return new DbkeepError("STORE_FAILED", `[store:${name}] ${what} failed: ${detail}${status ? ` (HTTP ${status})` : ""}`, {
      cause: err,
      retryable,
      ...(network || status === undefined ? { hint: `check that ${opts.endpoint ?? "storage.googleapis.com"} is reachable from this machine` } : {}),
    });
  }

  function objectName(key: string): string {
    if (key === "" || key.startsWith("/") || key.split("/").some((s) => s === "." || s === "..")) {
      throw new DbkeepError("STORE_FAILED", `[store:${name}] invalid key "${key}"`);
    }
    return root + key;
  }

  async function cancelSession(uri: string): Promise<void> {
    // A DELETE on the session URI cancels a resumable upload (the URI itself is the authorisation).
    await fetch(uri, { method: "DELETE", signal: AbortSignal.timeout(10_000) }).catch(() => undefined);
  }

  return {
    name,
    atomicCreate: true,

    async put(key: string, body: Readable, putOpts: PutOptions = {}) {
      const file = bucket.file(objectName(key));
      const signal = putOpts.signal;
      body.on("error", () => undefined);
      if (signal) addAbortSignal(signal, body);
      let bytes = 0;
      let session: string | undefined;
      // Generation 0 is "no live object": GCS refuses the upload (412) if the name exists when it completes.
      const precondition = putOpts.ifAbsent ? { preconditionOpts: { ifGenerationMatch: 0 } } : {};
      try {
        if (body.errored) throw body.errored;
        const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
        // The first chunk decides: an empty body is one small request, anything else a resumable session.
        const first = await it.next();
        if (first.done) {
          await file.save(Buffer.alloc(0), { resumable: false, contentType: "application/octet-stream", ...precondition });
        } else {
          [session] = await file.createResumableUpload({ metadata: { contentType: "application/octet-stream" }, ...precondition });
          const source = Readable.from(
            (async function* () {
              yield first.value;
              for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
            })(),
            { objectMode: false },
          );
          const counter = new Transform({
            transform(chunk: Buffer, _enc, cb) {
              bytes += chunk.length;
              cb(null, chunk);
            },
          });
          await pipeline(source, counter, file.createWriteStream({ uri: session, resumable: true, chunkSize, contentType: "application/octet-stream", validation: "crc32c" }));
        }
        const size = Number(file.metadata.size);
        if (size !== bytes) {
          await file.delete({ ignoreNotFound: true }).catch(() => undefined);
          throw new DbkeepError("STORE_FAILED", `[store:${name}] ${key} has ${Number.isNaN(size) ? "an unknown number of" : size} bytes after upload, ${bytes} were sent; it was removed`, { retryable: true });
        }
        return { bytes };
      } catch (err) {
        if (session) await cancelSession(session);
        if (signal?.aborted) throw new DbkeepError("ABORTED", `[store:${name}] upload of ${key} was cancelled`, { cause: err });
        // An error of the body (e.g. the dump failed) is not the store's fault: pass it through as it is.
        if (body.errored) throw body.errored;
        if (putOpts.ifAbsent && statusOf(err) === 412) throw new DbkeepError("ALREADY_EXISTS", `[store:${name}] ${key} already exists`, { cause: err });
        throw fail("upload of", key, err);
      }
    },

    async get(key: string, getOpts: { signal?: AbortSignal } = {}) {
      const objName = objectName(key);
      let generation: string | number | undefined;
      try {
        const [meta] = await bucket.file(objName).getMetadata();
        generation = meta.generation;
      } catch (err) {
        if (statusOf(err) === 404 && !bucketMissing(err)) throw new DbkeepError("STORE_NOT_FOUND", `[store:${name}] ${key} not found`, { cause: err });
        throw fail("read of", key, err);
      }
      // Pinned to the generation just seen, so that a concurrent overwrite cannot mix two versions.
      const stream = bucket.file(objName, generation !== undefined ? { generation: Number(generation) } : {}).createReadStream({ validation: "crc32c", decompress: false });
      const out = getOpts.signal ? addAbortSignal(getOpts.signal, stream) : stream;
      return out;
    },

    async stat(key: string) {
      try {
        const [meta] = await bucket.file(objectName(key)).getMetadata();
        return { key, size: Number(meta.size ?? 0), modified: new Date(meta.updated ?? meta.timeCreated ?? 0) };
      } catch (err) {
        if (statusOf(err) === 404 && !bucketMissing(err)) return undefined;
        throw fail("stat of", key, err);
      }
    },

    async *list(prefix: string): AsyncIterable<StoreObject> {
      let pageToken: string | undefined;
      do {
        let files, next;
        try {
          [files, next] = await bucket.getFiles({ prefix: root + prefix, autoPaginate: false, maxResults: opts.list_page_size ?? 1000, ...(pageToken ? { pageToken } : {}) });
        } catch (err) {
          throw fail("listing of", prefix || "/", err);
        }
        for (const f of files) {
          if (!f.name.startsWith(root)) continue;
          yield { key: f.name.slice(root.length), size: Number(f.metadata.size ?? 0), modified: new Date(f.metadata.updated ?? f.metadata.timeCreated ?? 0) };
        }
        pageToken = (next as { pageToken?: string } | null | undefined)?.pageToken;
      } while (pageToken);
    },

    async delete(keys: string[]) {
      const queue = [...new Set(keys)];
      const worker = async () => {
        for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
          try {
            await bucket.file(objectName(key)).delete({ ignoreNotFound: true });
          } catch (err) {
            throw fail("delete of", key, err);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, queue.length) }, worker));
    },

    async close() {},
  };
}

export default createGcsStore;
