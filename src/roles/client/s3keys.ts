import type { S3KeyInfo, S3KeyListReply, S3KeySecret } from "../../protocol/s3keys.js";

/** A directory request, as the client makes it (asked again across a directory restart when it changes nothing). */
type Ask = <T>(type: string, body: unknown) => Promise<T>;

/** The S3 gateway's access keys, as kept by the directory: `client.s3Keys`. */
export class S3Keys {
  constructor(private readonly ask: Ask) {}

  /** Makes a key for `buckets` (names, or `["*"]` for every bucket); the answer is the only time its secret is told unasked. */
  add(buckets: string[]): Promise<S3KeySecret> {
    return this.ask<S3KeySecret>("dir.s3key.add", { buckets });
  }

  /** Every key, without secrets, oldest first. */
  async list(): Promise<S3KeyInfo[]> {
    return (await this.ask<S3KeyListReply>("dir.s3key.list", {})).keys;
  }

  /** Fails NOT_FOUND when there is no such key. */
  async remove(id: string): Promise<void> {
    await this.ask("dir.s3key.remove", { id });
  }

  /** One key with its secret (what a gateway checks a signature with); NOT_FOUND when there is none. */
  get(id: string): Promise<S3KeySecret> {
    return this.ask<S3KeySecret>("dir.s3key.get", { id });
  }
}
