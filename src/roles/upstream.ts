import type { Peer, RequestOptions } from "../transport/actor.js";

/** A node's persistent link to the directory, as roles see it. */
export interface Upstream {
  request<T = unknown>(type: string, body: unknown, opts?: RequestOptions): Promise<T>;
  tell(type: string, body: unknown): Promise<void>;
}

/** Connections to other nodes by URL (storage to storage, client to storage). */
export interface PeerPool {
  request<T = unknown>(url: string, type: string, body: unknown, opts?: RequestOptions): Promise<T>;
  /** The connection to `url` itself, for a conversation that must stay on one connection (a chunk stream). */
  get(url: string, opts?: RequestOptions): Promise<Peer>;
}
