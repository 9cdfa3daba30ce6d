import { randomBytes, randomInt } from "node:crypto";
import type { Database } from "sql.js";
import { DfsError } from "../../protocol/errors.js";
import type { S3KeyInfo, S3KeySecret } from "../../protocol/s3keys.js";
import type { DirRecord } from "./schema.js";
import { all, get } from "./sql.js";

/** The S3 access keys of a metadata back end. A change answers once it survives a crash. */
export interface S3KeyStore {
  add(buckets: string[]): Promise<S3KeySecret>;
  /** Every key, without secrets, oldest first. */
  list(): Promise<S3KeyInfo[]>;
  /** NOT_FOUND when there is no such key. */
  remove(id: string): Promise<void>;
  /** NOT_FOUND when there is no such key. */
  get(id: string): Promise<S3KeySecret>;
}

const ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/** A new key: an id (DFS and 17 random capitals and digits) and a secret of 30 random bytes (40 characters of base64). */
export function newS3Key(buckets: string[], created = Date.now()): S3KeySecret {
  let id = "DFS";
  while (id.length < 20) id += ID_CHARS[randomInt(ID_CHARS.length)];
  return { id, secret: randomBytes(30).toString("base64"), buckets, created };
}

export const noSuchKey = (id: string) => new DfsError("NOT_FOUND", `no S3 access key ${id}`);

/** A row of `s3keys` (id, buckets, created[, secret]) as the protocol has it. */
export function keyOf(row: unknown[]): S3KeyInfo {
  return { id: String(row[0]), buckets: JSON.parse(String(row[1])) as string[], created: Number(row[2]) };
}

/** The embedded store's keys: journaled records, read from the live database once earlier records are durable. */
export class SqliteS3Keys implements S3KeyStore {
  constructor(
    private readonly db: Database,
    private readonly commit: (rec: DirRecord) => { durable: Promise<void> },
    /** Resolves with the value once everything committed before is durable. */
    private readonly settled: <T>(v: T) => Promise<T>,
  ) {}

  async add(buckets: string[]): Promise<S3KeySecret> {
    let key = newS3Key(buckets);
    while (get(this.db, "SELECT 1 FROM s3keys WHERE id=?", [key.id])) key = newS3Key(buckets);
    await this.commit({ op: "s3key", ...key }).durable;
    return key;
  }

  list(): Promise<S3KeyInfo[]> {
    return this.settled(all(this.db, "SELECT id, buckets, created FROM s3keys ORDER BY created, id").map(keyOf));
  }

  remove(id: string): Promise<void> {
    if (!get(this.db, "SELECT 1 FROM s3keys WHERE id=?", [id])) return Promise.reject(noSuchKey(id));
    return this.commit({ op: "s3key-rm", id }).durable;
  }

  get(id: string): Promise<S3KeySecret> {
    const r = get(this.db, "SELECT id, buckets, created, secret FROM s3keys WHERE id=?", [id]);
    if (!r) return this.settled(undefined).then(() => Promise.reject(noSuchKey(id)));
    return this.settled({ ...keyOf(r), secret: String(r[3]) });
  }
}
