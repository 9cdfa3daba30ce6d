import { createHash } from "node:crypto";
import type { RegisterBody } from "../../protocol/directory.js";
import type { VerifyReply } from "../../protocol/storage.js";
import type { Logger } from "../../log.js";
import { DfsError } from "../../protocol/errors.js";

/*
 * Decisions both metadata back ends make the same way, given what they read from their tables.
 */

/** How a node secret is kept: only its digest is stored. */
export const secretDigest = (secret: string) => createHash("sha256").update(secret).digest("hex");

/** What the node table already holds for a node id: the certificate, secret digest and role it registered with. */
export interface KnownNode {
  cert?: string;
  secret?: string;
  role: string;
}

/**
 * Throws unless `b` may register on a connection whose certificate is `peer`: a node id is bound to the
 * certificate and data folder that first used it, and a node's data to its cluster. Returns the secret's digest.
 */
export function checkRegistration(b: RegisterBody, peer: { role: string; name: string }, clusterId: string, known: KnownNode | undefined): string | undefined {
  if (b.kind !== peer.role && peer.role !== "directory") {
    throw new DfsError("FORBIDDEN", `a ${peer.role} certificate may not register as ${b.kind}`);
  }
  if (b.clusterId !== null && b.clusterId !== clusterId) {
    throw new DfsError("FORBIDDEN", `this node's data belongs to cluster ${b.clusterId}, but this directory serves cluster ${clusterId}; ` +
      "point the node at its own cluster's directory, or give it an empty --data folder to join this one", {
      details: { nodeCluster: b.clusterId, directoryCluster: clusterId },
    });
  }
  if (b.kind === "storage" && !b.secret) throw new DfsError("BAD_REQUEST", "a storage node must present its node secret");
  const secret = b.secret ? secretDigest(b.secret) : undefined;
  if (known) {
    if (known.role !== b.kind) throw new DfsError("FORBIDDEN", `node id ${b.id} is registered as a ${known.role} node`);
    if (known.cert !== undefined && known.cert !== peer.name) {
      throw new DfsError("FORBIDDEN", `node id ${b.id} belongs to the holder of certificate "${known.cert}", not "${peer.name}"`);
    }
    if (known.secret !== undefined && known.secret !== secret) {
      throw new DfsError("FORBIDDEN", `node id ${b.id} is registered from another data folder (its node secret differs)`);
    }
  }
  return secret;
}

/** A commit names chunks the collector removed meanwhile: the writer must store them again. */
export function chunksGone(path: string, missing: string[]): DfsError {
  return new DfsError("CONFLICT", `${missing.length} chunk(s) of ${path} are no longer stored (collected before this commit); nothing was committed, write the file again`, {
    details: { path, reason: "chunks-gone", missing },
  });
}

/** A commit's chunk has too few live copies to be acknowledged. */
export function tooFewCopies(path: string, hash: string, have: number, need: number): DfsError {
  return new DfsError("NOT_ENOUGH_NODES", `chunk ${hash.slice(0, 12)} of ${path} is on ${have} live node(s), ${need} needed; nothing was committed`);
}

/** A commit that started from another version than the file has now. */
export function versionConflict(path: string, baseVersion: number, version: number): DfsError {
  return new DfsError("CONFLICT", `${path} changed since version ${baseVersion} (now ${version}); nothing was committed`, {
    details: { path, baseVersion, version },
  });
}

export const noSuchFile = (path: string) => new DfsError("NOT_FOUND", `no such file: ${path}`);
export const targetExists = (path: string) => new DfsError("EXISTS", `${path} already exists; remove it first`);

/**
 * Whether a replica reported bad by someone other than its node is to be dropped: only once the node, asked
 * with `verify`, says so, so that nobody can delist a good copy by saying so. A node that cannot be asked
 * keeps the replica.
 */
export async function confirmedBad(log: Logger, b: { hash: string; node: string; reason: string }, by: string, verify: () => Promise<VerifyReply>): Promise<boolean> {
  let state: VerifyReply["state"];
  try {
    state = (await verify()).state;
  } catch (err) {
    log.warn("could not check a reported bad replica", { hash: b.hash, node: b.node, err });
    return false;
  }
  if (state === "ok") {
    log.warn("reported bad replica is fine, kept", { hash: b.hash, node: b.node, by, reason: b.reason });
    return false;
  }
  log.warn("bad replica confirmed", { hash: b.hash, node: b.node, state, reason: b.reason });
  return true;
}

/** Sorts after every character in byte (code point) order, as both back ends compare paths: the end of a prefix's range. */
export const LAST_CHAR = "\u{10FFFF}";
