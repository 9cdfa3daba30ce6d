import { z } from "zod";
import { bytes, count, nodeUrl, remotePath, sha256Hex } from "./common.js";
import { fileMeta, type FileMeta } from "./file-meta.js";
import { s3KeySchemas } from "./s3keys.js";

/** Random per-process id of a client; it proves who holds a lease, so it is long enough not to be guessed. */
export const sessionId = z.string().regex(/^[A-Za-z0-9_-]{16,64}$/, "session must be 16-64 letters, digits, _ or -");
const nodeId = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "node id must be 1-64 letters, digits, . _ -");
/** A cluster id or node secret: what a data folder proves itself with. */
const secret = z.string().regex(/^[0-9a-f]{32,128}$/, "must be lowercase hex");

/** Files one commit (a transaction) may carry. */
export const MAX_COMMIT_FILES = 1000;

/** Hashes per `dir.report` page: a page must apply in well under 100 ms on the directory. */
export const REPORT_PAGE = 5_000;

/** Wire contract of the directory role (`dir.*`): bodies as checked at the edge, and replies. */
export const dirSchemas = {
  register: z.object({
    kind: z.enum(["storage", "lock"]),
    id: nodeId,
    url: nodeUrl,
    zone: z.string().max(64).default(""),
    capacity: count.nullable().default(null),
    free: count.default(0),
    used: count.default(0),
    chunks: count.default(0),
    /** The cluster this node's data belongs to; null for a node that never joined one. */
    clusterId: secret.nullable().default(null),
    /** Kept in the node's data folder: binds the node id to that folder (storage). */
    secret: secret.optional(),
  }),
  /** One page of a storage node's chunk list, sent after `dir.register`; `last` ends the report. */
  report: z.object({
    report: count,
    /** SHA-256 hashes as 32 raw bytes each. */
    hashes: bytes.refine((b) => b.length % 32 === 0 && b.length <= REPORT_PAGE * 32, "must be whole 32-byte hashes, one page at most"),
    last: z.boolean(),
  }),
  heartbeat: z.object({ free: count, used: count, chunks: count }),
  status: z.object({}).passthrough(),
  hello: z.object({}).passthrough(),
  place: z.object({
    chunks: z.array(z.object({ hash: sha256Hex, size: count })).max(100_000),
    /** Nodes the client found unreachable or failing, to be avoided. */
    exclude: z.array(z.string().max(64)).max(1000).default([]),
  }),
  stored: z.object({ chunks: z.array(z.object({ hash: sha256Hex, size: count, gen: count })).min(1).max(100_000) }),
  commit: z.object({
    files: z
      .array(
        z.object({
          path: remotePath,
          size: count,
          sha256: sha256Hex,
          chunks: z.array(sha256Hex).max(1_000_000),
          /** The lease token the writer holds on the path, when it holds one. */
          token: count.optional(),
          /** Version the writer started from (0 = the file must not exist); absent = overwrite whatever is there. */
          baseVersion: count.optional(),
          /** Kept with this version, replacing the previous version's; absent or empty = none. */
          meta: fileMeta.optional(),
        }),
      )
      .min(1)
      // A commit applies in one step of the directory's event loop, which must stay short.
      .max(MAX_COMMIT_FILES, `at most ${MAX_COMMIT_FILES} files commit together`),
    session: sessionId.optional(),
  }),
  lookup: z.object({ path: remotePath }),
  list: z.object({
    prefix: z.string().max(4096).default("/"),
    limit: count.max(100_000).default(10_000),
    /** Only paths after this one (byte order): the next page of a listing. */
    after: z.string().max(4096).optional(),
    /** Each entry's `meta` too; off by default, so that a plain listing stays small. */
    meta: z.boolean().default(false),
  }),
  remove: z.object({ path: remotePath, token: count.optional(), session: sessionId.optional() }),
  move: z.object({
    from: remotePath,
    to: remotePath,
    fromToken: count.optional(),
    toToken: count.optional(),
    session: sessionId.optional(),
  }),
  badReplica: z.object({ hash: sha256Hex, node: z.string().max(64), reason: z.string().max(500).default("") }),
  /** From the lock service: grant a lease (no token) or renew one (token). */
  lease: z.object({
    path: remotePath,
    token: count.optional(),
    owner: z.string().max(200).default(""),
    session: sessionId,
    ttlMs: count.min(100).max(3_600_000),
  }),
  /**
   * From the lock service: the lease with this token ended (released, expired, holder gone). With `session`, a
   * release the lock service cannot vouch for (it never granted the lease): it must be that session's lease.
   */
  unlease: z.object({ path: remotePath, token: count, session: sessionId.optional() }),
  ...s3KeySchemas,
} as const;

export type RegisterBody = z.output<typeof dirSchemas.register>;
export type ReportBody = z.output<typeof dirSchemas.report>;
export type PlaceBody = z.output<typeof dirSchemas.place>;
export type StoredBody = z.output<typeof dirSchemas.stored>;
export type CommitBody = z.output<typeof dirSchemas.commit>;
export type LeaseBody = z.output<typeof dirSchemas.lease>;

export type NodeState = "up" | "suspect" | "down";

/** One node as `status --json` shows it. */
export interface NodeStatus {
  id: string;
  role: "storage" | "lock";
  url: string;
  zone: string;
  state: NodeState;
  capacity: number | null;
  free: number;
  used: number;
  chunks: number;
  /** ISO time the directory last heard from the node. */
  lastSeen: string;
}

export interface StatusReply {
  directory: { url: string; replicas: number; minReplicas: number; deadAfterSeconds: number; clusterId: string };
  nodes: NodeStatus[];
  files: number;
  chunks: number;
  bytes: number;
  /** Chunks with fewer live copies than `replicas`, as of the last scan of all chunks. */
  underReplicated: number;
  /** ISO time that scan finished; null before the first one. */
  scannedAt: string | null;
}

export interface HelloReply {
  lockUrl: string | null;
  replicas: number;
  minReplicas: number;
  chunkSize: number;
}

/** A lease the directory knows, as the lock service restores it after a restart. */
export interface LeaseInfo {
  path: string;
  token: number;
  owner: string;
  session: string;
  expiresAt: number;
}

export interface RegisterReply {
  accepted: true;
  replicas: number;
  heartbeatMs: number;
  clusterId: string;
  /** Storage: the directory's generation now; deletes ordered before it are refused by a node that restarted since. */
  gen: number;
  /** Storage: the number to send with every page of this registration's chunk report. */
  report: number;
  /** Lock: the leases the directory holds live, for a lock service that restarted. */
  leases: LeaseInfo[];
}

export interface ReportReply {
  /** Hashes of the page that the directory knows no file or upload of. */
  unknown: number;
}

export interface Replica {
  node: string;
  url: string;
}

export interface PlaceReply {
  /** Per chunk, in order: the chain of nodes to write (empty when enough live replicas exist already). */
  chunks: { hash: string; targets: Replica[] }[];
  /** Generation of this placement: puts carry it, and a delete ordered before it cannot remove what they store. */
  gen: number;
}

export interface StoredReply {
  /** Chunks the directory did not record: a delete of them was ordered after the placement they were stored under. */
  refused: string[];
}

export interface FileInfo {
  path: string;
  version: number;
  size: number;
  sha256: string;
  mtime: number;
  chunks: { hash: string; size: number; replicas: Replica[] }[];
  /** What the commit of this version carried; absent when none. */
  meta?: FileMeta;
}

export interface ListEntry {
  path: string;
  size: number;
  version: number;
  mtime: number;
  /** Only when the listing asked for it (`meta: true`), and the version has any. */
  meta?: FileMeta;
}

export interface CommitReply {
  versions: { path: string; version: number }[];
}

export interface LeaseReply {
  token: number;
  expiresAt: number;
  /** What others are shown as the holder; on a renewal, as recorded at the grant. */
  owner: string;
}
