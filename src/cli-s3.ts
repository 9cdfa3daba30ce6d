import { Command } from "commander";
import { loadCerts } from "./certs/load.js";
import { parseDirectoryUrls } from "./host.js";
import { logger, setLogLevel } from "./log.js";
import { DfsError, toDfsError } from "./protocol/errors.js";
import { ALL_BUCKETS } from "./protocol/s3keys.js";
import { DfsClient, defaultCacheDir } from "./roles/client.js";
import { formatNewS3Key, formatS3Keys } from "./roles/client/format.js";

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** The connection options of a key command, also taken before `s3` (as `dfs --directory URL s3 keys list`). */
interface Connection {
  directory?: string;
  certs?: string;
  name?: string;
}

function withConnection(cmd: Command): Command {
  return cmd
    .option("--directory <urls>", "directory address, or several as a comma list (default: env DFS_DIRECTORY, else wss://localhost:9000)")
    .option("--certs <dir>", "folder with ca.crt and NAME.crt/NAME.key (default: env DFS_CERTS, else ./certs)")
    .option("--name <name>", "certificate name to use, a client's (default: client)");
}

/** Runs `work` with a client of the directory, closing it afterwards whatever happens. */
async function withClient<T>(program: Command, own: Connection, work: (c: DfsClient) => Promise<T>): Promise<T> {
  setLogLevel("warn");
  // The program's options carry the environment and the defaults; a command's own, when given, win.
  const top = program.opts() as Connection;
  const source = own.directory !== undefined ? "cli" : program.getOptionValueSource("directory");
  let urls: string[];
  try {
    urls = parseDirectoryUrls(own.directory ?? top.directory ?? "");
  } catch (err) {
    if (source !== "env") throw err;
    throw new DfsError("BAD_REQUEST", `${toDfsError(err).message}; the value comes from DFS_DIRECTORY`);
  }
  const tls = loadCerts(own.certs ?? top.certs ?? "./certs", own.name ?? top.name ?? "client");
  const client = new DfsClient({ directoryUrls: urls, tls, cacheDir: defaultCacheDir(), log: logger("client") });
  try {
    await client.connect();
    return await work(client);
  } finally {
    await client.close();
  }
}

const out = (text: string) => void process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);

/** `dfs s3 keys add|list|remove`: the S3 gateway's access keys, kept by the directory. */
export function addS3Commands(program: Command): void {
  const s3 = program.command("s3").description("the S3 gateway's access keys");
  const keys = s3.command("keys").description("make, list and remove the access keys S3 clients sign their requests with");
  withConnection(keys.command("add"))
    .description("make an access key for the buckets named (every bucket, present and future, without --bucket); prints its id and secret")
    .option("--bucket <name>", "a bucket the key may use (repeatable)", collect)
    .option("--json", "print {id, secret, buckets, created} as JSON")
    .action(async (o: Connection & { bucket?: string[]; json?: boolean }) => {
      const key = await withClient(program, o, (c) => c.s3Keys.add(o.bucket ?? [ALL_BUCKETS]));
      if (o.json) return out(JSON.stringify(key));
      out(formatNewS3Key(key));
      process.stderr.write("the secret is shown only now: keep it where the S3 client can read it\n");
    });
  withConnection(keys.command("list"))
    .description("list the access keys (ids, buckets, when made; never secrets)")
    .option("--json", "print {keys: [{id, buckets, created}]} as JSON")
    .action(async (o: Connection & { json?: boolean }) => {
      const list = await withClient(program, o, (c) => c.s3Keys.list());
      out(o.json ? JSON.stringify({ keys: list }) : formatS3Keys(list));
    });
  withConnection(keys.command("remove"))
    .description("remove an access key: the directory forgets it, and the gateway with it")
    .argument("<id>", "the key's id")
    .action(async (id: string, o: Connection) => {
      await withClient(program, o, (c) => c.s3Keys.remove(id));
      out(`removed S3 access key ${id}`);
    });
}
