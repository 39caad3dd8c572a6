import { createHash, randomBytes } from "node:crypto";
import { addAbortSignal, type Readable } from "node:stream";
import { AnonymousCredential, BlobServiceClient, StorageSharedKeyCredential, type StoragePipelineOptions } from "@azure/storage-blob";
import { DbkeepError } from "../../core/errors.js";
import { redact } from "../../core/redact.js";
import { VERSION } from "../../core/version.js";
import { MiB, normalisePrefix } from "../size.js";
import type { PutOptions, Store, StoreObject } from "../store.js";
import type { AzureStoreOptions } from "./schema.js";
export { azureStoreSchema, type AzureStoreOptions } from "./schema.js";

export interface AzureCredentials {
  connectionString?: string | undefined;
  accountKey?: string | undefined;
  sasToken?: string | undefined;
}

const DEFAULT_BLOCK_SIZE = 8 * MiB;
const DEFAULT_CONCURRENCY = 4;
/** Azure's limit on the blocks of one block blob. */
const MAX_BLOCKS = 50_000;
const DELETE_CONCURRENCY = 8;

const AUTH_CODES = new Set(["AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch", "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch", "AuthorizationResourceTypeMismatch", "AuthorizationServiceMismatch", "InvalidAuthenticationInfo", "NoAuthenticationInformation", "InsufficientAccountPermissions"]);

interface AzureLikeError {
  statusCode?: number;
  code?: string;
  message?: string;
  name?: string;
}

/** A message line without SAS signatures or other query strings, and without any registered secret. */
function clean(text: string): string {
  return redact(text.split("\n")[0] ?? "").replace(/(https?:\/\/[^\s?"']+)\?[^\s"']*/g, "$1?***").trim();
}

/**
 * Block blobs in a container. put() stages blocks of `block_size` (at most `upload_concurrency` in flight, so memory
 * stays near block_size x (upload_concurrency + 1)) and commits the block list only after the body ended cleanly:
 * before commitBlockList nothing is visible under the key and a previous blob there is untouched. Staged blocks that
 * are never committed are discarded by the service after a week. With ifAbsent the commit carries If-None-Match: *,
 * which the service refuses for an existing blob (atomicCreate).
 */
export function createAzureStore(opts: AzureStoreOptions, name = `azure:${opts.container}`, creds: AzureCredentials = {}): Store {
  const root = normalisePrefix(opts.prefix);
  const blockSizeOpt = opts.block_size ?? DEFAULT_BLOCK_SIZE;
  const concurrency = opts.upload_concurrency ?? DEFAULT_CONCURRENCY;
  const pipelineOptions: StoragePipelineOptions = {
    retryOptions: { maxTries: opts.max_attempts ?? 4 },
    userAgentOptions: { userAgentPrefix: `dbkeep/${VERSION}` },
  };
  const accountUrl = (opts.endpoint ?? `https://${opts.account}.blob.core.windows.net`).replace(/\/+$/, "");

  let service: BlobServiceClient;
  try {
    if (creds.connectionString) service = BlobServiceClient.fromConnectionString(creds.connectionString, pipelineOptions);
    else if (creds.accountKey) service = new BlobServiceClient(accountUrl, new StorageSharedKeyCredential(opts.account ?? "", creds.accountKey), pipelineOptions);
    else if (creds.sasToken) service = new BlobServiceClient(`${accountUrl}?${creds.sasToken.replace(/^\?/, "")}`, new AnonymousCredential(), pipelineOptions);
    else throw new Error("no credentials given");
  } catch (err) {
    throw new DbkeepError("CONFIG_INVALID", `[store:${name}] cannot set up the Azure client: ${clean((err as Error).message)}`, {
      hint: "give connection_string, account + account_key, or sas_token with account or endpoint (each also as _env / _file)",
      cause: err,
    });
  }
  const container = service.getContainerClient(opts.container);

  function fail(action: string, key: string, err: unknown): DbkeepError {
    if (err instanceof DbkeepError) return err;
    const e = err as AzureLikeError;
    const status = e.statusCode;
    const code = e.code;
    const what = `${action}${key ? ` ${key}` : ""}`;
    const detail = clean(e.message || code || (status ? `HTTP ${status}` : String(err)));
    const where = `container "${opts.container}" at ${service.url.split("?")[0]}`;
    if (e.name === "AbortError") return new DbkeepError("ABORTED", `[store:${name}] ${what} was cancelled`, { cause: err });
    if (code === "ContainerNotFound") {
      return new DbkeepError("STORE_FAILED", `[store:${name}] ${what} failed: ${where} does not exist`, { cause: err, hint: `create it (az storage container create --name ${opts.container}) or fix container:` });
    }
    if (status === 401 || status === 403 || (code && AUTH_CODES.has(code))) {
      return new DbkeepError("STORE_FAILED", `[store:${name}] ${what} failed: access denied (${code ?? `HTTP ${status}`}) to ${where}`, {
        cause: err,
        hint: "check the store's connection_string / account_key / sas_token (a SAS needs read, write, delete and list permissions and must not be expired), and the clock of this machine",
      });
    }
    if (code === "BlobArchived") {
      return new DbkeepError("STORE_FAILED", `[store:${name}] ${what} failed: the blob is in the Archive tier`, { cause: err, hint: "rehydrate it first (az storage blob set-tier --tier Hot ...), which takes hours" });
    }
    const retryable = status === undefined || status === 408 || status === 429 || status >= 500;
    return new DbkeepError("STORE_FAILED", `[store:${name}] ${what} failed: ${detail}${status ? ` (HTTP ${status}${code ? ` ${code}` : ""})` : ""}`, {
      cause: err,
      retryable,
      ...(status === undefined ? { hint: `check that ${accountUrl} is reachable from this machine` } : {}),
    });
  }

  function isNotFound(err: unknown): boolean {
    const e = err as AzureLikeError;
    return e.statusCode === 404 && e.code !== "ContainerNotFound";
  }

  function blobName(key: string): string {
    if (key === "" || key.startsWith("/") || key.split("/").some((s) => s === "." || s === "..")) {
      throw new DbkeepError("STORE_FAILED", `[store:${name}] invalid key "${key}"`);
    }
    return root + key;
  }

  function blockSizeFor(size: number | undefined): number {
    if (size === undefined) return blockSizeOpt;
    // A known size may need bigger blocks to stay within the 50,000 blocks of a blob.
    return Math.max(blockSizeOpt, Math.ceil(size / (MAX_BLOCKS - 100) / MiB) * MiB);
  }

  return {
    name,
    atomicCreate: true,

    async put(key: string, body: Readable, putOpts: PutOptions = {}) {
      const blob = container.getBlockBlobClient(blobName(key));
      const signal = putOpts.signal;
      const blockSize = blockSizeFor(putOpts.size);
      // Cancels the staging requests in flight when anything fails.
      const stop = new AbortController();
      const onAbort = () => stop.abort();
      signal?.addEventListener("abort", onAbort, { once: true });
      body.on("error", () => undefined);
      if (signal) addAbortSignal(signal, body);

      const uploadId = randomBytes(8).toString("hex");
      const ids: string[] = [];
      const inflight = new Set<Promise<void>>();
      let failure: { err: unknown } | undefined;
      let bytes = 0;

      // Block buffers are allocated once and reused: memory stays at (upload_concurrency + 1) blocks without waiting
      // for the garbage collector.
      const pool: Buffer[] = [];
      const takeBuffer = (): Buffer => pool.pop() ?? Buffer.allocUnsafe(blockSize);

      const stage = async (buffer: Buffer, length: number) => {
        const block = buffer.subarray(0, length);
        if (ids.length >= MAX_BLOCKS) {
          throw new DbkeepError("STORE_FAILED", `[store:${name}] ${key} needs more than ${MAX_BLOCKS} blocks of ${blockSize} bytes`, { hint: "raise block_size (a blob holds at most 50,000 blocks)" });
        }
        // Every block id of a blob must have the same length.
        const id = Buffer.from(`${uploadId}-${String(ids.length).padStart(6, "0")}`).toString("base64");
        ids.push(id);
        const md5 = createHash("md5").update(block).digest();
        const p: Promise<void> = blob
          .stageBlock(id, block, block.length, { abortSignal: stop.signal, transactionalContentMD5: md5 })
          .then(
            () => void pool.push(buffer),
            (err: unknown) => {
              failure ??= { err };
              stop.abort();
            },
          )
          .finally(() => inflight.delete(p));
        inflight.add(p);
        while (inflight.size >= concurrency && !failure) await Promise.race(inflight);
        if (failure) throw failure.err;
      };

      try {
        if (body.errored) throw body.errored;
        let current: Buffer | undefined;
        let filled = 0;
        for await (const c of body) {
          const chunk = Buffer.isBuffer(c) ? c : Buffer.from(c as string);
          bytes += chunk.length;
          for (let at = 0; at < chunk.length; ) {
            current ??= takeBuffer();
            const n = chunk.copy(current, filled, at);
            filled += n;
            at += n;
            if (filled === blockSize) {
              const full = current;
              current = undefined;
              filled = 0;
              await stage(full, blockSize);
            }
          }
        }
        if (current && filled > 0) await stage(current, filled);
        await Promise.all(inflight);
        if (failure) throw failure.err;
        if (signal?.aborted) throw signal.reason;
        // The commit is the moment the blob appears; an abort from here on no longer stops it. With ifAbsent the
        // service refuses it for an existing blob (If-None-Match: *), atomically.
        try {
          await blob.commitBlockList(ids, {
            blobHTTPHeaders: { blobContentType: "application/octet-stream" },
            ...(opts.access_tier ? { tier: opts.access_tier } : {}),
            ...(putOpts.ifAbsent ? { conditions: { ifNoneMatch: "*" } } : {}),
          });
        } catch (err) {
          const e = err as AzureLikeError;
          if (putOpts.ifAbsent && (e.statusCode === 412 || e.code === "BlobAlreadyExists" || e.code === "ConditionNotMet")) {
            throw new DbkeepError("ALREADY_EXISTS", `[store:${name}] ${key} already exists`, { cause: err });
          }
          throw err;
        }
        const props = await blob.getProperties();
        if (props.contentLength !== bytes) {
          await blob.deleteIfExists().catch(() => undefined);
          throw new DbkeepError("STORE_FAILED", `[store:${name}] ${key} has ${props.contentLength} bytes after upload, ${bytes} were sent; it was removed`, { retryable: true });
        }
        return { bytes };
      } catch (err) {
        stop.abort();
        await Promise.allSettled([...inflight]);
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
        const res = await container.getBlobClient(blobName(key)).download(0, undefined, {
          maxRetryRequests: 5,
          ...(getOpts.signal ? { abortSignal: getOpts.signal } : {}),
        });
        const stream = res.readableStreamBody as Readable | undefined;
        if (!stream) throw new Error("the response has no body");
        return stream;
      } catch (err) {
        if (isNotFound(err)) throw new DbkeepError("STORE_NOT_FOUND", `[store:${name}] ${key} not found`, { cause: err });
        throw fail("read of", key, err);
      }
    },

    async stat(key: string) {
      try {
        const p = await container.getBlobClient(blobName(key)).getProperties();
        return { key, size: p.contentLength ?? 0, modified: p.lastModified ?? new Date(0) };
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw fail("stat of", key, err);
      }
    },

    async *list(prefix: string): AsyncIterable<StoreObject> {
      const pages = container.listBlobsFlat({ prefix: root + prefix }).byPage({ maxPageSize: opts.list_page_size ?? 1000 });
      for (;;) {
        let page;
        try {
          page = await pages.next();
        } catch (err) {
          throw fail("listing of", prefix || "/", err);
        }
        if (page.done) return;
        for (const b of page.value.segment.blobItems) {
          if (!b.name.startsWith(root)) continue;
          yield { key: b.name.slice(root.length), size: b.properties.contentLength ?? 0, modified: b.properties.lastModified };
        }
      }
    },

    async delete(keys: string[]) {
      const queue = [...new Set(keys)];
      const worker = async () => {
        for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
          try {
            await container.getBlobClient(blobName(key)).deleteIfExists({ deleteSnapshots: "include" });
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

export default createAzureStore;
