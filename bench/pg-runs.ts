/**
 * What `--metadata postgres` adds to a run: the small-file workload on clusters whose directories keep
 * their metadata in the bench's PostgreSQL server (one directory process, then two sharing a database),
 * and metadata scale on PostgreSQL.
 */
import { BenchCluster } from "./cluster.js";
import { pgMetadataScale, type PgMetaResult } from "./metadata-pg.js";
import { BENCH_PG_SETTINGS, type BenchPostgres } from "./postgres.js";
import { smallFiles, type SmallOptions, type SmallResult } from "./workloads.js";

/** The 1 KiB phases: the 64 KiB ones add nothing to a comparison of metadata back ends. */
const PG_SMALL_PHASES = ["write:1k", "read:1k", "stat:1k", "ls:1k", "lock:1k"];

export interface PgResults {
  server: { version: string; settings: string[] };
  small?: { oneDirectory: SmallResult; twoDirectories: SmallResult };
  metadata?: PgMetaResult;
}

export interface PgRunOptions {
  root: string;
  certs: string;
  logs: string;
  /** The small-file workload to run (its 1 KiB phases), or none. */
  small?: SmallOptions;
  /** Files to commit for metadata scale, or none. */
  metaFiles?: number;
  progress: (s: string) => void;
}

/** A fresh cluster over a fresh database, the small-file workload, then the cluster stopped. */
async function smallOn(pg: BenchPostgres, o: PgRunOptions, directories: number): Promise<SmallResult> {
  const name = `pg-${directories}dir`;
  const cluster = new BenchCluster(o.root, { storage: 3, replicas: 2, metadata: await pg.database(name.replace("-", "_")), directories, name });
  o.progress(`${name}: starting cluster: ${directories} directory process${directories > 1 ? "es" : ""} over one PostgreSQL database, lock, 3 storage nodes (replicas 2)`);
  try {
    await cluster.start();
    o.progress(`${name}: cluster up at ${cluster.dirUrls.join(",")}`);
    return await smallFiles(cluster, { ...o.small!, phases: PG_SMALL_PHASES }, (s) => o.progress(`${name}: ${s}`));
  } finally {
    o.progress(`${name}: stopping the cluster`);
    await cluster.stop();
  }
}

export async function postgresRuns(pg: BenchPostgres, o: PgRunOptions): Promise<PgResults> {
  const out: PgResults = { server: { version: pg.version, settings: BENCH_PG_SETTINGS } };
  if (o.small) out.small = { oneDirectory: await smallOn(pg, o, 1), twoDirectories: await smallOn(pg, o, 2) };
  if (o.metaFiles) out.metadata = await pgMetadataScale(pg, o.certs, o.logs, o.root, o.metaFiles, o.progress);
  return out;
}
