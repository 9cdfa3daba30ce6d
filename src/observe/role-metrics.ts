import type { TransferStats } from "../roles/client/transfer.js";
import type { DirectoryView } from "../roles/directory.js";
import type { LockService } from "../roles/lock.js";
import type { Storage } from "../roles/storage.js";
import type { Metrics } from "./metrics.js";

const STATES = ["up", "suspect", "down"] as const;

/** The cluster as the directory sees it: nodes by state, the namespace's size, replication, repair and GC, metadata on disk. */
export function directoryMetrics(m: Metrics, view: DirectoryView): void {
  // One status per scrape, shared by the gauges that read it.
  let pending: ReturnType<DirectoryView["status"]> | undefined;
  const status = () => (pending ??= view.status().finally(() => setImmediate(() => (pending = undefined))));
  m.gauge("dfs_nodes", "Storage and lock nodes the directory knows, by role and state", ["role", "state"], async () => {
    const s = await status();
    return (["storage", "lock"] as const).flatMap((role) => STATES.map((state) => ({
      labels: { role, state }, value: s.nodes.filter((n) => n.role === role && n.state === state).length,
    })));
  });
  m.gauge("dfs_files", "Files in the namespace", [], async () => [{ value: (await status()).files }]);
  m.gauge("dfs_file_bytes", "Bytes of all files' current versions (one copy)", [], async () => [{ value: (await status()).bytes }]);
  m.gauge("dfs_chunks", "Chunks the files refer to", [], async () => [{ value: (await status()).chunks }]);
  m.gauge("dfs_under_replicated_chunks", "Chunks with fewer live copies than --replicas, as of the last scan", [], async () => [{ value: (await status()).underReplicated }]);
  m.gauge("dfs_replication_scan_timestamp_seconds", "When the last scan of all chunks' copies finished", [], async () => {
    const at = (await status()).scannedAt;
    return at === null ? [] : [{ value: Date.parse(at) / 1000 }];
  });
  m.counter("dfs_repair_copies_total", "Chunk copies made by repair since this directory process started", [], () => [{ value: view.activity().repairCopies }]);
  m.counter("dfs_gc_deleted_chunks_total", "Chunk copies deleted by garbage collection since this directory process started", [], () => [{ value: view.activity().gcDeleted }]);
  m.counter("dfs_committed_bytes_total", "Bytes of file versions committed through this directory process", [], () => [{ value: view.activity().writtenBytes }]);
  m.counter("dfs_opened_bytes_total", "Bytes of files clients looked up through this directory process, to read or stat them", [], () => [{ value: view.activity().readBytes }]);
  m.gauge("dfs_journal_bytes", "Size of the metadata journal's current generation", [], () => {
    const b = view.activity().journalBytes;
    return b === null ? [] : [{ value: b }];
  });
  m.gauge("dfs_snapshot_bytes", "Size of the newest metadata snapshot", [], () => {
    const b = view.activity().snapshotBytes;
    return b === null ? [] : [{ value: b }];
  });
}

/** One storage node's chunk store; `node` tells the nodes of one process apart. */
export function storageMetrics(m: Metrics, node: string, s: Storage): void {
  const labels = { node };
  m.gauge("dfs_storage_chunks", "Chunks stored on this node", ["node"], () => [{ labels, value: s.chunks.usage().chunks }]);
  m.gauge("dfs_storage_used_bytes", "Bytes of chunks stored on this node", ["node"], () => [{ labels, value: s.chunks.usage().used }]);
  m.gauge("dfs_storage_free_bytes", "Bytes this node can still take (the smaller of its capacity left and the disk's free space)", ["node"], async () => [{ labels, value: await s.chunks.free() }]);
  m.gauge("dfs_storage_capacity_bytes", "The node's --capacity, when one is set", ["node"], () => {
    const c = s.chunks.usage().capacity;
    return c === null ? [] : [{ labels, value: c }];
  });
}

export function lockMetrics(m: Metrics, node: string, l: LockService): void {
  const labels = { node };
  m.gauge("dfs_lock_leases_held", "Write locks held through this lock service", ["node"], () => [{ labels, value: l.counts().held }]);
  m.gauge("dfs_lock_waiting", "Clients waiting for a write lock on this lock service", ["node"], () => [{ labels, value: l.counts().waiting }]);
}

/** A client's transfers and its cache, for a process that runs a client (`dfs local`). */
export function clientMetrics(m: Metrics, stats: TransferStats): void {
  m.counter("dfs_client_cache_hits_total", "Chunks read from the client's cache", [], () => [{ value: stats.chunksFromCache }]);
  m.counter("dfs_client_cache_misses_total", "Chunks the client fetched from storage nodes", [], () => [{ value: stats.chunksFetched }]);
  m.counter("dfs_client_fetched_bytes_total", "Bytes the client fetched from storage nodes", [], () => [{ value: stats.bytesFetched }]);
  m.counter("dfs_client_uploaded_chunks_total", "Chunks the client stored", [], () => [{ value: stats.chunksUploaded }]);
}
