import type { PostgresBackend } from "../../../metadata/postgres.js";
import type { S3KeyInfo, S3KeySecret } from "../../../protocol/s3keys.js";
import { keyOf, newS3Key, noSuchKey, type S3KeyStore } from "../s3keys.js";

const READ = { readOnly: true } as const;

/** The access keys in PostgreSQL's `s3keys` table; each change is one transaction, answered after COMMIT. */
export class PgS3Keys implements S3KeyStore {
  constructor(private readonly db: PostgresBackend) {}

  async add(buckets: string[]): Promise<S3KeySecret> {
    for (;;) {
      // Made outside the transaction, which may run more than once; a taken id (never seen yet) makes another.
      const key = newS3Key(buckets);
      const added = await this.db.transact((tx) => tx.run(
        "INSERT INTO s3keys(id, secret, buckets, created) VALUES(?,?,?,?) ON CONFLICT(id) DO NOTHING",
        [key.id, key.secret, JSON.stringify(key.buckets), key.created],
      ));
      if (added === 1) return key;
    }
  }

  list(): Promise<S3KeyInfo[]> {
    return this.db.transact(async (tx) => (await tx.all("SELECT id, buckets, created FROM s3keys ORDER BY created, id")).map(keyOf), READ);
  }

  async remove(id: string): Promise<void> {
    const gone = await this.db.transact((tx) => tx.run("DELETE FROM s3keys WHERE id=?", [id]));
    if (gone === 0) throw noSuchKey(id);
  }

  async get(id: string): Promise<S3KeySecret> {
    const r = await this.db.transact((tx) => tx.get("SELECT id, buckets, created, secret FROM s3keys WHERE id=?", [id]), READ);
    if (!r) throw noSuchKey(id);
    return { ...keyOf(r), secret: String(r[3]) };
  }
}
