import { createReadStream, createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import type { Readable, Writable } from "node:stream";
import { DfsError } from "../../protocol/errors.js";
import type { DfsClient } from "./client.js";
import { bytes, formatList, formatStatus } from "./format.js";
import { progressBar } from "./progress.js";

/** Where a command's words go: the answer to stdout, everything for people to stderr. */
export interface Io {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable & { isTTY?: boolean };
  cwd: string;
  /** True inside the REPL, where stdin carries commands and cannot carry file data. */
  interactive: boolean;
}

interface Command {
  usage: string;
  summary: string;
  /** Flags, each taking a value or not; `multiple` ones may be given again and come as a list. */
  options?: Record<string, { type: "string" | "boolean"; multiple?: boolean }>;
  min: number;
  max: number;
  run(c: DfsClient, args: string[], flags: Record<string, string | boolean | string[] | undefined>, io: Io): Promise<void>;
}

const line = (io: Io, text: string) => void io.stdout.write(text.endsWith("\n") || text === "" ? text : text + "\n");

function localPath(io: Io, remote: string, local: string | undefined): string {
  return path.resolve(io.cwd, local ?? path.posix.basename(remote));
}

export const COMMANDS: Record<string, Command> = {
  write: {
    usage: "write REMOTE [LOCAL] [--meta KEY=VALUE]...",
    summary: "store LOCAL (default: REMOTE's base name here; - = stdin) as REMOTE (a new file is created if still absent; an existing one is replaced under its write lock), with metadata KEY=VALUE kept with this version",
    min: 1, max: 2,
    options: { meta: { type: "string", multiple: true } },
    async run(c, [remote, local], f, io) {
      const meta = metaFlags(f.meta as string[] | undefined);
      let source: AsyncIterable<Uint8Array> | (() => AsyncIterable<Uint8Array>);
      let total: number | undefined;
      const from = local ?? path.posix.basename(remote!);
      if (from === "-") {
        if (io.interactive) throw new DfsError("BAD_REQUEST", "`write REMOTE -` reads stdin, which carries commands here; run it as a one-shot command");
        source = io.stdin;
      } else {
        const file = localPath(io, remote!, local);
        const st = await fs.stat(file).catch(() => undefined);
        if (!st) throw new DfsError("NOT_FOUND", `no such local file: ${file}`);
        if (!st.isFile()) throw new DfsError("BAD_REQUEST", `${file} is not a regular file`);
        total = st.size;
        // Reads of a whole default chunk, so chunks need no copying together. A function, so that a write
        // whose chunks were collected before its commit can read the file again.
        source = () => createReadStream(file, { highWaterMark: 4 * 1024 * 1024 });
      }
      const bar = progressBar(io.stderr, `write ${remote}`, total);
      try {
        const r = await c.write(remote!, source, { onProgress: (n) => bar.add(n), meta });
        bar.stop();
        line(io, r.staged
          ? `staged ${r.path} (${bytes(r.size)}, ${r.chunks} chunks); \`commit\` makes it visible`
          : `wrote ${r.path} v${r.version} (${bytes(r.size)}, ${r.chunks} chunks)`);
      } finally {
        bar.stop();
      }
    },
  },
  read: {
    usage: "read REMOTE [LOCAL]",
    summary: "fetch REMOTE into LOCAL (default: its base name here; - = stdout), through the cache",
    min: 1, max: 2,
    async run(c, [remote, local], _f, io) {
      if (local === "-") {
        await readTo(c, remote!, io.stdout, io);
        return;
      }
      const file = localPath(io, remote!, local);
      // Written beside the target and renamed at the end: a failed read never leaves a half file in its place.
      const tmp = `${file}.dfs-partial-${process.pid}`;
      const out = createWriteStream(tmp);
      try {
        const before = { ...c.stats };
        const info = await readTo(c, remote!, out, io, false);
        await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
        await fs.rename(tmp, file);
        const fetched = c.stats.chunksFetched - before.chunksFetched;
        line(io, `read ${info.path} v${info.version} -> ${path.relative(io.cwd, file) || file} (${bytes(info.size)}, ${info.chunks.length} chunks, ${fetched} fetched, ${info.chunks.length - fetched} cached)`);
      } catch (err) {
        out.destroy();
        await fs.rm(tmp, { force: true });
        throw err;
      }
    },
  },
  cat: {
    usage: "cat REMOTE", summary: "print REMOTE", min: 1, max: 1,
    async run(c, [remote], _f, io) {
      await readTo(c, remote!, io.stdout, io);
    },
  },
  ls: {
    usage: "ls [PREFIX]", summary: "list files (size, version, time, path)", min: 0, max: 1,
    async run(c, [prefix], _f, io) {
      const text = formatList(await c.ls(prefix ?? "/"));
      if (text) line(io, text);
    },
  },
  stat: {
    usage: "stat REMOTE [--json]", summary: "version, size, SHA-256 and where each chunk lives", min: 1, max: 1,
    options: { json: { type: "boolean" } },
    async run(c, [remote], f, io) {
      const info = await c.stat(remote!);
      if (f.json) return line(io, JSON.stringify(info));
      line(io, [
        `path     ${info.path}`, `version  ${info.version}`, `size     ${bytes(info.size)} (${info.size} bytes)`,
        `sha256   ${info.sha256}`, `modified ${new Date(info.mtime).toISOString()}`, `chunks   ${info.chunks.length}`,
        ...info.chunks.map((ch, i) => `  ${String(i).padStart(4)} ${ch.hash.slice(0, 16)} ${bytes(ch.size).padStart(9)}  ${ch.replicas.map((r) => r.url).join(" ") || "(no live replica)"}`),
        ...Object.entries(info.meta ?? {}).map(([k, v], i) => `${i === 0 ? "meta    " : "        "} ${k}=${JSON.stringify(v)}`),
      ].join("\n"));
    },
  },
  rm: {
    usage: "rm REMOTE", summary: "remove a file", min: 1, max: 1,
    async run(c, [remote], _f, io) {
      await c.rm(remote!);
      line(io, `removed ${remote}`);
    },
  },
  mv: {
    usage: "mv FROM TO", summary: "rename a file", min: 2, max: 2,
    async run(c, [from, to], _f, io) {
      await c.mv(from!, to!);
      line(io, `moved ${from} -> ${to}`);
    },
  },
  lock: {
    usage: "lock REMOTE [--wait SECONDS]", summary: "hold the write lock on REMOTE across commands", min: 1, max: 1,
    options: { wait: { type: "string" } },
    async run(c, [remote], f, io) {
      const wait = f.wait === undefined ? 0 : Number(f.wait);
      if (!Number.isFinite(wait) || wait < 0) throw new DfsError("BAD_REQUEST", "--wait takes a number of seconds");
      const lease = await c.lock(remote!, { waitMs: Math.round(wait * 1000) });
      line(io, `locked ${lease.path} (token ${lease.token}); held until \`unlock\` or the end of this session`);
    },
  },
  unlock: {
    usage: "unlock REMOTE", summary: "release a lock taken with `lock`", min: 1, max: 1,
    async run(c, [remote], _f, io) {
      if (!(await c.unlock(remote!))) throw new DfsError("BAD_REQUEST", `this session holds no lock on ${remote}`);
      line(io, `unlocked ${remote}`);
    },
  },
  begin: {
    usage: "begin", summary: "start a transaction: later writes become visible together at `commit`", min: 0, max: 0,
    async run(c, _a, _f, io) {
      c.begin();
      line(io, "transaction open");
    },
  },
  commit: {
    usage: "commit", summary: "make every write since `begin` visible at once, or none", min: 0, max: 0,
    async run(c, _a, _f, io) {
      const r = await c.commit();
      line(io, `committed ${r.versions.length} file(s)${r.versions.map((v) => `\n  ${v.path} v${v.version}`).join("")}`);
    },
  },
  abort: {
    usage: "abort", summary: "drop every write since `begin`", min: 0, max: 0,
    async run(c, _a, _f, io) {
      line(io, `aborted; ${await c.abort()} staged write(s) dropped`);
    },
  },
  status: {
    usage: "status [--json]", summary: "cluster health: nodes, their state, space, chunks, under-replicated data", min: 0, max: 0,
    options: { json: { type: "boolean" } },
    async run(c, _a, f, io) {
      const s = await c.status();
      line(io, f.json ? JSON.stringify(s) : formatStatus(s));
    },
  },
  help: {
    usage: "help [COMMAND]", summary: "list commands, or explain one", min: 0, max: 1,
    async run(_c, [name], _f, io) {
      line(io, helpText(name));
    },
  },
};

export function helpText(name?: string): string {
  if (name) {
    const cmd = COMMANDS[name];
    if (!cmd) throw unknownCommand(name);
    return `${cmd.usage}\n  ${cmd.summary}`;
  }
  const width = Math.max(...Object.values(COMMANDS).map((c) => c.usage.length)) + 2;
  return ["commands:", ...Object.values(COMMANDS).map((c) => `  ${c.usage.padEnd(width)}${c.summary}`), `  ${"exit".padEnd(width)}leave`].join("\n");
}

export function unknownCommand(name: string): DfsError {
  return new DfsError("BAD_REQUEST", `unknown command ${JSON.stringify(name)}; \`help\` lists the commands`);
}

/** Runs one command line (already split into words). */
export async function runCommand(c: DfsClient, words: string[], io: Io): Promise<void> {
  const [name, ...rest] = words;
  const cmd = name ? COMMANDS[name] : undefined;
  if (!cmd) throw unknownCommand(name ?? "");
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: cmd.options ?? {}, allowPositionals: true, strict: true });
  } catch (err) {
    throw new DfsError("BAD_REQUEST", `${(err as Error).message.split("\n")[0]}; usage: ${cmd.usage}`);
  }
  const args = parsed.positionals;
  if (args.length < cmd.min || args.length > cmd.max) throw new DfsError("BAD_REQUEST", `usage: ${cmd.usage}`);
  await cmd.run(c, args, parsed.values as Record<string, string | boolean | undefined>, io);
}

/** `--meta KEY=VALUE` flags as a map; undefined when none was given. */
function metaFlags(flags: string[] | undefined): Record<string, string> | undefined {
  if (!flags?.length) return undefined;
  // Without a prototype, so that a key like __proto__ stays an entry and is refused by name.
  const meta: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const f of flags) {
    const eq = f.indexOf("=");
    if (eq <= 0) throw new DfsError("BAD_REQUEST", `--meta takes KEY=VALUE, not ${JSON.stringify(f)}`);
    meta[f.slice(0, eq)] = f.slice(eq + 1);
  }
  return meta;
}

async function readTo(c: DfsClient, remote: string, out: Writable, io: Io, end = false) {
  let bar: ReturnType<typeof progressBar> | undefined;
  try {
    return await c.read(remote, async (data) => {
      if (!out.write(data)) await new Promise<void>((resolve, reject) => {
        const onErr = (e: Error) => reject(e);
        out.once("error", onErr);
        out.once("drain", () => {
          out.off("error", onErr);
          resolve();
        });
      });
    }, {
      onStart: (info) => (bar = progressBar(io.stderr, `read ${info.path}`, info.size)),
      onProgress: (n) => bar?.add(n),
    });
  } finally {
    bar?.stop();
    if (end) out.end();
  }
}
