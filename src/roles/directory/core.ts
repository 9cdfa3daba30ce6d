import type {
  CommitBody, CommitReply, FileInfo, LeaseBody, LeaseReply, ListEntry, PlaceBody, PlaceReply, RegisterBody, RegisterReply,
  ReportBody, ReportReply, StatusReply, StoredBody, StoredReply,
} from "../../protocol/directory.js";
import type { Peer } from "../../transport/actor.js";
import type { S3KeyStore } from "./s3keys.js";

export type Awaitable<T> = T | Promise<T>;

export interface ListOptions {
  /** Only paths after this one (byte order). */
  after?: string;
  withMeta?: boolean;
}

/** What status shows beyond the directory's own settings. */
export type ClusterStatus = Omit<StatusReply, "directory">;

/** Work this directory process did since it started, and its metadata's size on disk (null: PostgreSQL keeps it). */
export interface DirectoryActivity {
  repairCopies: number;
  gcDeleted: number;
  journalBytes: number | null;
  snapshotBytes: number | null;
}

/**
 * What a metadata back end does for the directory: the embedded store (sql.js in the data folder, one
 * directory process) or PostgreSQL (any number of stateless directory processes). The directory's
 * handlers are written once against this; both back ends share the rules (`rules.ts`, `leases.ts`'s
 * fencing, `placement.ts`) and differ only in how they read and change their tables.
 *
 * A method answers only once its change survives a crash. A synchronous answer is one the back end could
 * give at once, in order with the messages around it.
 */
export interface DirectoryCore {
  readonly clusterId: string;
  register(b: RegisterBody, peer: Peer): Promise<RegisterReply>;
  report(b: ReportBody, peer: Peer): Promise<ReportReply>;
  /** Throws BAD_REQUEST for a connection that has not registered. */
  heartbeat(b: { free: number; used: number; chunks: number }, peer: Peer): Awaitable<void>;
  /** A connection closed: the node that registered on it may be gone. */
  detach(peer: Peer): void;
  status(): Awaitable<ClusterStatus>;
  activity(): DirectoryActivity;
  lockUrl(): Awaitable<string | null>;
  place(b: PlaceBody): Promise<PlaceReply>;
  stored(b: StoredBody, peer: Peer): Awaitable<StoredReply>;
  commit(b: CommitBody): Promise<CommitReply>;
  lookup(path: string): Promise<FileInfo>;
  /** Files under `prefix` in byte order, from the first one past `after`; with `withMeta`, each entry's metadata too. */
  list(prefix: string, limit: number, opts?: ListOptions): Promise<ListEntry[]>;
  remove(b: { path: string; token?: number; session?: string }): Promise<void>;
  move(b: { from: string; to: string; fromToken?: number; toToken?: number; session?: string }): Promise<void>;
  /** A replica reported bad: dropped once the node itself says so (or confirms it when asked). */
  badReplica(b: { hash: string; node: string; reason: string }, peer: Peer): Promise<void>;
  lease(b: LeaseBody): Promise<LeaseReply>;
  unlease(b: { path: string; token: number; session?: string }): Awaitable<void>;
  /** The S3 gateway's access keys. */
  readonly s3keys: S3KeyStore;
  /** Files, for the start-up line. */
  files(): Awaitable<number>;
  close(): Promise<void>;
}
