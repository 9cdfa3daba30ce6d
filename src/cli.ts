import { Command, InvalidArgumentError, Option } from "commander";
import fs from "node:fs";
import path from "node:path";
import { loadCerts, ROLES, type Role } from "./certs/load.js";
import { DfsError, toDfsError } from "./protocol/errors.js";
import { logger, setLogLevel, setLogSink, type LogLevel } from "./log.js";
import { CHECKPOINT_COMMAND, runCheckpointCommand } from "./checkpointer.js";
import { addS3Commands } from "./cli-s3.js";
import { metaDirsOf, parseDirectoryUrls, parseRoles, startNode, type ServerRole } from "./host.js";
import type { MigrateReport } from "./metadata/migrate-directory.js";
import { parseMetadataOption } from "./metadata/option.js";
import { recoverMeta, type RecoverReport } from "./roles/directory/recover.js";
import { DIRECTORY_SCHEMA } from "./roles/directory/schema.js";
import { runClient } from "./roles/client.js";
import { isPostgresMetadata } from "./roles/directory.js";
import { runLocal } from "./local.js";
import { parseHttpAddress, type HttpAddress } from "./observe/address.js";
import { VERSION } from "./version.js";

const int = (what: string, min = 0) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${what} must be a whole number${min > 0 ? ` >= ${min}` : ""}`);
  return n;
};
const collect = (v: string, prev: string[] = []) => [...prev, v];
const httpAddress = (v: string): HttpAddress => {
  try {
    return parseHttpAddress(v);
  } catch (err) {
    throw new InvalidArgumentError(toDfsError(err).message.replace(/^--http: /, ""));
  }
};

function fail(err: unknown): never {
  process.stderr.write(`dfs: ${toDfsError(err).message}\n`);
  process.exit(1);
}

/** Closes everything on Ctrl-C or a service manager's TERM, then exits. */
function onSignals(close: () => Promise<void>): void {
  let stopping = false;
  const stop = () => {
    if (stopping) process.exit(1);
    stopping = true;
    close().then(() => process.exit(0), () => process.exit(1));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

export function buildProgram(): Command {
  const program = new Command("dfs")
    .description("dfs: a small distributed file system in one program.\nRun servers with --role, work with files with --role client.")
    .version(VERSION, "-V, --version")
    .enablePositionalOptions()
    .passThroughOptions()
    .addOption(new Option("--role <roles>", "directory, lock, storage (comma list), client, or s3 (the S3 gateway)"))
    .option("--port <port>", "port to listen on (0 = any free port; default 9000 directory, 9001 lock, 9003 storage, 9080 s3)", int("--port"))
    .option("--host <host>", "address to listen on and to advertise", "127.0.0.1")
    .option("--data <dir>", "folder for this node's data", "./data")
    .addOption(new Option("--certs <dir>", "folder with ca.crt and NAME.crt/NAME.key").env("DFS_CERTS").default("./certs"))
    .option("--name <name>", "certificate name to use (default: the first role)")
    .addOption(new Option("--directory <urls>", "directory address, or several as a comma list (wss://a:9000,wss://b:9000): a node holds one and moves to the next when it fails").env("DFS_DIRECTORY").default("wss://localhost:9000"))
    .option("--replicas <n>", "copies of every chunk (directory)", int("--replicas", 1), 2)
    .option("--min-replicas <n>", "copies needed to commit (directory; default = replicas)", int("--min-replicas", 1))
    .option("--dead-after <seconds>", "a node silent this long is dead (directory)", int("--dead-after", 1), 30)
    .option("--orphan-grace <seconds>", "delete chunks nothing has used this long: no file, no upload, or unknown to the directory (directory)", int("--orphan-grace"), 3600)
    .option("--chunk-size <bytes>", "chunk size for new files, at most 16 MiB (directory)", int("--chunk-size", 1024), 4 * 1024 * 1024)
    .option("--meta-dir <dir>", "an extra folder that keeps a full copy of the metadata, best on another disk (directory; repeatable)", collect)
    .addOption(new Option("--metadata <url>", "where the directory keeps its metadata: sqlite (in --data) or a PostgreSQL URL (directory)").env("DFS_METADATA").default("sqlite"))
    .option("--snapshot-every <records>", "journal records between snapshots of the metadata (directory)", int("--snapshot-every", 1), 10000)
    .option("--capacity <bytes>", "most bytes this storage node keeps", int("--capacity", 1))
    .option("--zone <name>", "failure zone of this storage node", "")
    .option("--scrub-interval <seconds>", "pause between passes that re-hash every stored chunk (storage; 0 = off)", int("--scrub-interval"), 3600)
    .option("--cache <dir>", "client cache folder (default ~/.cache/dfs)")
    .option("--cache-size <bytes>", "client cache bound", int("--cache-size", 0))
    .option("--http <host:port>", "serve Prometheus /metrics here, and on a directory the status page and /api/status (off by default; beyond loopback: HTTPS, and the page needs a client certificate or the token)", httpAddress)
    .option("--http-token-file <file>", "file with a token that opens the status page and API without a client certificate: a browser's password or a bearer token (with --http)")
    .option("--s3-insecure-loopback", "s3: serve plain HTTP instead of HTTPS (only on a loopback --host)")
    .option("--http-metrics-open", "serve /metrics without a certificate or token even beyond loopback, as Prometheus setups expect (with --http)")
    .addOption(new Option("--log-level <level>", "debug, info, warn, error or silent").choices(["debug", "info", "warn", "error", "silent"]))
    .argument("[command...]", "client command (with --role client); none = interactive")
    .addHelpText("after", `
Examples:
  dfs certs init --host box1 --host box2         make a cluster CA and certificates
  dfs --role directory,lock                       directory and lock service on :9000
  dfs --role storage --port 9003 --data /srv/dfs  a storage node
  dfs --role storage --directory wss://box1:9000,wss://box2:9000
                                                  a node that moves to the next directory address when one fails
  dfs --role directory --meta-dir /disk2/meta     a second copy of the metadata on another disk
  dfs --role directory --metadata postgres://dfs@db1:5432/dfs
                                                  metadata in PostgreSQL (or set DFS_METADATA)
  dfs directory recover --data ./data             rebuild damaged metadata (with the directory stopped)
  dfs metadata migrate --from ./data --to postgres://dfs@db1/dfs
                                                  copy a stopped directory's metadata into PostgreSQL
  dfs --role client write /docs/a.txt a.txt       store a file
  dfs s3 keys add --bucket photos                 an access key for the S3 gateway, for one bucket
  dfs --role client                               interactive client (type help)
  dfs --role s3 --port 9080 --directory wss://box1:9000
                                                  an S3 endpoint (keys: dfs s3 keys add --bucket photos)
  dfs local                                       a whole cluster in one process, with the client`)
    .action(async (command: string[], o) => {
      if (!o.role) {
        if (command.length > 0) fail(new DfsError("BAD_REQUEST", `unknown command ${JSON.stringify(command[0])}; \`dfs --help\` lists what dfs does`));
        program.help();
      }
      const roles = parseRoles(o.role);
      const metadata = metadataOf(roles, o.metadata, program.getOptionValueSource("metadata"));
      if (isPostgresMetadata(metadata)) {
        const embeddedOnly = [o.metaDir ? "--meta-dir" : "", program.getOptionValueSource("snapshotEvery") === "cli" ? "--snapshot-every" : ""].filter(Boolean);
        if (embeddedOnly.length) fail(new DfsError("BAD_REQUEST", `${embeddedOnly.join(" and ")}: only for the embedded store; with --metadata postgres://... the database keeps the metadata`));
      }
      if (o.logLevel) setLogLevel(o.logLevel as LogLevel);
      // A directory links to itself; only the other roles use the list, so only they are held to it.
      const directoryUrls = roles.includes("directory") ? [] : directoryList(o.directory, program.getOptionValueSource("directory"));
      if (!o.http && (o.httpTokenFile || o.httpMetricsOpen)) fail(new DfsError("BAD_REQUEST", `${o.httpTokenFile ? "--http-token-file" : "--http-metrics-open"} needs --http HOST:PORT`));
      if (roles[0] === "client") {
        if (o.http) fail(new DfsError("BAD_REQUEST", "--http is for server roles (directory, lock, storage); a client serves nothing"));
        if (!o.logLevel) setLogLevel("warn");
        const tls = loadCerts(o.certs, o.name ?? "client");
        const code = await runClient({
          directoryUrls, tls, cacheDir: o.cache, cacheBytes: o.cacheSize, log: logger("client"), command,
          io: { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, cwd: process.cwd(), interactive: false },
        });
        process.exit(code);
      }
      if (command.length > 0) fail(new DfsError("BAD_REQUEST", `server roles take no command (got ${JSON.stringify(command[0])})`));
      if (o.s3InsecureLoopback && roles[0] !== "s3") fail(new DfsError("BAD_REQUEST", "--s3-insecure-loopback is an option of --role s3"));
      if (roles[0] === "s3") {
        if (o.http) fail(new DfsError("BAD_REQUEST", "--http is not served by the s3 gateway yet"));
        const { startGateway } = await import("./s3/gateway.js");
        const gw = await startGateway({
          host: o.host, port: o.port ?? 9080, tls: loadCerts(o.certs, o.name ?? "client"), directoryUrls, dataDir: o.data,
          insecureLoopback: o.s3InsecureLoopback, log: logger("s3"),
        });
        process.stdout.write(`listening on ${gw.url}\n`);
        onSignals(() => gw.close());
        return;
      }
      const serverRoles = roles as ServerRole[];
      const tls = loadCerts(o.certs, o.name ?? serverRoles[0]!);
      const node = await startNode({
        roles: serverRoles, host: o.host, port: o.port, dataDir: o.data, tls, directoryUrls,
        replicas: o.replicas, minReplicas: o.minReplicas ?? o.replicas, deadAfterMs: o.deadAfter * 1000,
        chunkSize: o.chunkSize, capacity: o.capacity, zone: o.zone, scrubIntervalMs: o.scrubInterval * 1000, orphanGraceMs: o.orphanGrace * 1000,
        metaDirs: o.metaDir, snapshotEvery: o.snapshotEvery, metadata,
        http: o.http ? { address: o.http, tokenFile: o.httpTokenFile, metricsOpen: o.httpMetricsOpen } : undefined,
      });
      process.stdout.write(`listening on ${node.url}\n`);
      if (node.httpUrl) process.stdout.write(`http on ${node.httpUrl}${roles.includes("directory") ? " (status page, /metrics)" : " (/metrics)"}\n`);
      onSignals(() => node.close());
    });

  const certs = program.command("certs").description("make the cluster CA and node certificates");
  certs
    .command("init")
    .description("write ca.crt, ca.key and a certificate per role (directory, lock, storage, client)")
    .option("--dir <dir>", "folder to write into", "certs")
    .option("--host <host>", "extra host name or IP the certificates are valid for (repeatable)", collect, [])
    .option("--force", "replace an existing CA (every node then needs new certificates)")
    .action(async (o) => {
      // Loaded on demand, as the PostgreSQL client is: the certificate library weighs on every process that has it.
      const { initCerts } = await import("./certs/generate.js");
      const files = await initCerts({ dir: o.dir, hosts: o.host, force: o.force });
      process.stdout.write(`wrote ${files.length} files to ${o.dir}: ${files.join(", ")}\n`);
    });
  certs
    .command("issue")
    .description("issue one more certificate from the CA in --dir")
    .requiredOption("--role <role>", `role the certificate grants: ${ROLES.join(", ")}`)
    .requiredOption("--name <name>", "certificate name (files NAME.crt, NAME.key)")
    .option("--dir <dir>", "folder holding ca.crt and ca.key", "certs")
    .option("--host <host>", "host name or IP the certificate is valid for (repeatable)", collect, [])
    .option("--force", "replace an existing certificate of that name")
    .action(async (o) => {
      if (!(ROLES as readonly string[]).includes(o.role)) fail(new DfsError("BAD_REQUEST", `unknown role ${JSON.stringify(o.role)}; roles are ${ROLES.join(", ")}`));
      const { issueCert } = await import("./certs/generate.js");
      const files = await issueCert({ dir: o.dir, role: o.role as Role, name: o.name, hosts: o.host, force: o.force });
      process.stdout.write(`wrote ${files.join(", ")} to ${o.dir}\n`);
    });

  const directory = program.command("directory").description("work on the metadata of a stopped directory");
  directory
    .command("recover")
    .description("rebuild damaged metadata: keep every record that still applies, set the damaged files aside, list the paths lost")
    .option("--data <dir>", "the directory's data folder (metadata in DATA/meta)", "./data")
    .option("--meta-dir <dir>", "an extra metadata folder the directory runs with (repeatable)", collect)
    .action(async (o) => {
      setLogLevel("warn");
      const report = await recoverMeta(DIRECTORY_SCHEMA, metaDirsOf(o.data, o.metaDir), logger("recover"));
      process.stdout.write(formatRecoverReport(report));
    });
  directory
    .command(CHECKPOINT_COMMAND[1]!, { hidden: true })
    .requiredOption("--gen <n>", "snapshot generation to build", int("--gen", 1))
    .option("--dir <dir>", "metadata folder (repeatable)", collect, [])
    .action(async (o) => process.exit(await runCheckpointCommand({ gen: o.gen, dirs: o.dir })));

  const metadata = program.command("metadata").description("move the directory's metadata between back ends");
  metadata
    .command("migrate")
    .description("copy a stopped directory's metadata (DATA/meta) into an empty PostgreSQL database, then check the copy")
    .requiredOption("--from <dir>", "the directory's data folder (metadata in DIR/meta); the directory must be stopped")
    .requiredOption("--to <url>", "the PostgreSQL database: postgres://[user[:password]@]host[:port][,host[:port]...]/database[?...]")
    .option("--meta-dir <dir>", "an extra metadata folder the directory runs with (repeatable)", collect)
    .addHelpText("after", `
The target must hold no dfs metadata. The copy is checked: row counts, the cluster id and a SHA-256
of the namespace (path, version, size, sha256 and chunks of every file) must match the source.
Damaged metadata is refused: run \`dfs directory recover\` first. The directory itself does not run
on PostgreSQL yet; this prepares the database for it.`)
    .action(async (o) => {
      // A failure is reported once, as the command's one line; connection retries are not news here.
      setLogLevel("error");
      const recoverHint = ["dfs directory recover --data", o.from, ...(o.metaDir ?? []).flatMap((d: string) => ["--meta-dir", d])].join(" ");
      const { migrateDirectory } = await import("./metadata/migrate-directory.js");
      const report = await migrateDirectory({
        dirs: metaDirsOf(o.from, o.metaDir), url: o.to, recoverHint,
        progress: (line) => process.stderr.write(`${line}\n`),
      });
      process.stdout.write(formatMigrateReport(report));
    });

  program
    .command("local")
    .description("a whole cluster in one process (directory, lock, N storage nodes on free ports) and the client REPL")
    .option("--storage <n>", "storage nodes", int("--storage", 1), 3)
    .option("--data <dir>", "folder for all of the cluster's data and certificates", "./data/local")
    .option("--replicas <n>", "copies of every chunk", int("--replicas", 1), 2)
    .option("--http <host:port>", "where the status page and /metrics of the whole cluster are served", httpAddress, parseHttpAddress("127.0.0.1:0"))
    .option("--no-http", "serve no status page")
    .option("--s3 [host:port]", "also run an S3 gateway (default 127.0.0.1:9080; plain HTTP on loopback) with a key for every bucket, kept in DATA/s3-key.json", httpAddress)
    .argument("[command...]", "run one client command instead of the REPL")
    .action(async (command: string[], o) => {
      fs.mkdirSync(o.data, { recursive: true });
      const logFile = fs.openSync(path.join(o.data, "dfs.log"), "a");
      // The REPL owns the terminal; the cluster's log lines go to a file beside its data.
      setLogSink((line) => fs.writeSync(logFile, line + "\n"));
      const s3 = o.s3 === true ? parseHttpAddress("127.0.0.1:9080") : (o.s3 as HttpAddress | undefined);
      const code = await runLocal({ storage: o.storage, dataDir: o.data, replicas: o.replicas, command, http: o.http || undefined, s3 });
      process.exit(code);
    });
  addS3Commands(program);
  return program;
}

/** The --directory list, or a one-line reason that names where a bad value came from. */
function directoryList(value: string, source: string | undefined): string[] {
  try {
    return parseDirectoryUrls(value);
  } catch (err) {
    if (source !== "env") throw err;
    throw new DfsError("BAD_REQUEST", `${toDfsError(err).message}; the value comes from DFS_DIRECTORY`);
  }
}

/** The --metadata of a directory process, or a one-line reason that names where a bad value came from. */
function metadataOf(roles: string[], value: string, source: string | undefined): string | undefined {
  if (!roles.includes("directory")) {
    if (source === "cli") {
      throw new DfsError("BAD_REQUEST", "--metadata is for processes with the directory role: lock and storage processes and clients keep no metadata of their own");
    }
    // One environment file may serve every process of a host; only a directory reads DFS_METADATA from it.
    return undefined;
  }
  try {
    return parseMetadataOption(value);
  } catch (err) {
    if (source !== "env") throw err;
    throw new DfsError("BAD_REQUEST", `${toDfsError(err).message}; the value comes from DFS_METADATA`);
  }
}

/** What `metadata migrate` did, in one line. */
export function formatMigrateReport(r: MigrateReport): string {
  return `migrated ${r.rows.files} files, ${r.rows.chunks} chunks, ${r.rows.replicas} replicas, cluster ${r.cluster}; namespace hash ${r.namespaceHash} matches\n`;
}

/** What `directory recover` did, for people: one line per finding, then `lost PATH` / `changed PATH` lines. */
export function formatRecoverReport(r: RecoverReport): string {
  const where = r.dirs.join(", ");
  if (r.intact) {
    const torn = r.tornTail ? `; the torn tail of ${r.tornTail.file} at byte ${r.tornTail.offset} (a write never acknowledged) is cut when the directory starts` : "";
    const snap = r.snapshotGen ? `snapshot generation ${r.snapshotGen}` : "no snapshot yet";
    return `metadata in ${where} is intact (${snap})${torn}; nothing to recover\n`;
  }
  const lines = [`recovering the metadata in ${where}`];
  for (const s of r.damagedSnapshots) lines.push(`damaged snapshot ${s.file}: ${s.reason}`);
  for (const d of r.damaged) {
    const names = d.paths.length ? `${d.decoded ? "names" : "its bytes still name"} ${d.paths.join(" ")}` : "names no path";
    const what = d.excerpt ? `record ${d.excerpt}; ${names}` : names;
    lines.push(`${d.torn ? "torn tail" : "damaged"} ${d.file} bytes ${d.offset}-${d.end} (${d.reason}): ${what}`);
  }
  for (const x of r.refused) lines.push(`no longer applies: ${x.file} byte ${x.offset}: ${x.reason}`);
  lines.push(`kept ${r.kept} records, could not keep ${r.refused.length} more and ${r.damaged.length} damaged stretch(es)`);
  for (const p of r.lost) lines.push(`lost ${p}`);
  for (const p of r.changed) lines.push(`changed ${p}`);
  lines.push(`the originals are kept in ${r.aside.join(", ")}`);
  lines.push(`recovered: snapshot generation ${r.snapshotGen} written; start the directory as before`);
  return lines.join("\n") + "\n";
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    fail(err);
  }
}
