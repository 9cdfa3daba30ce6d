import { z } from "zod";
import { count, nodeUrl, remotePath, sha256Hex } from "./common.js";

/** Wire contract of the directory role (`dir.*`): bodies as checked at the edge, and replies. */
export const dirSchemas = {
  register: z.object({
    kind: z.enum(["storage", "lock"]),
    id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "node id must be 1-64 letters, digits, . _ -"),
    url: nodeUrl,
    zone: z.string().max(64).default(""),
    capacity: count.nullable().default(null),
    free: count.default(0),
    used: count.default(0),
    /** Full chunk report, sent on every (re)registration so the directory can reconcile. */
    chunks: z.array(sha256Hex).max(10_000_000).default([]),
  }),
  heartbeat: z.object({ free: count, used: count, chunks: count }),
  status: z.object({}).passthrough(),
  hello: z.object({}).passthrough(),
  place: z.object({
    chunks: z.array(z.object({ hash: sha256Hex, size: count })).max(100_000),
    /** Nodes the client found unreachable or failing, to be avoided. */
    exclude: z.array(z.string().max(64)).max(1000).default([]),
  }),
  stored: z.object({ chunks: z.array(z.object({ hash: sha256Hex, size: count })).min(1).max(100_000) }),
  commit: z.object({
    files: z
      .array(
        z.object({
          path: remotePath,
          size: count,
          sha256: sha256Hex,
          chunks: z.array(sha256Hex).max(1_000_000),
          token: count,
          /** Version the writer started from (0 = the file must not exist); absent = overwrite whatever is there. */
          baseVersion: count.optional(),
        }),
      )
      .min(1)
      .max(10_000),
  }),
  lookup: z.object({ path: remotePath }),
  list: z.object({ prefix: z.string().max(4096).default("/"), limit: count.max(100_000).default(10_000) }),
  remove: z.object({ path: remotePath, token: count.optional() }),
  move: z.object({ from: remotePath, to: remotePath, token: count.optional() }),
  badReplica: z.object({ hash: sha256Hex, node: z.string().max(64), reason: z.string().max(500).default("") }),
} as const;

export type RegisterBody = z.output<typeof dirSchemas.register>;
export type HeartbeatBody = z.output<typeof dirSchemas.heartbeat>;
export type PlaceBody = z.output<typeof dirSchemas.place>;
export type CommitBody = z.output<typeof dirSchemas.commit>;

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
  directory: { url: string; replicas: number; minReplicas: number; deadAfterSeconds: number };
  nodes: NodeStatus[];
  files: number;
  chunks: number;
  bytes: number;
  underReplicated: number;
}

export interface HelloReply {
  lockUrl: string | null;
  replicas: number;
  minReplicas: number;
  chunkSize: number;
}

export interface RegisterReply {
  accepted: true;
  replicas: number;
  heartbeatMs: number;
}

export interface Replica {
  node: string;
  url: string;
}

export interface PlaceReply {
  /** Per chunk, in order: the chain of nodes to write (empty when enough live replicas exist already). */
  chunks: { hash: string; targets: Replica[] }[];
}

export interface FileInfo {
  path: string;
  version: number;
  size: number;
  sha256: string;
  mtime: number;
  chunks: { hash: string; size: number; replicas: Replica[] }[];
}

export interface ListEntry {
  path: string;
  size: number;
  version: number;
  mtime: number;
}

export interface CommitReply {
  versions: { path: string; version: number }[];
}
