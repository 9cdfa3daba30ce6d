import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { toDfsError } from "../../protocol/errors.js";
import type { DfsClient } from "./client.js";
import { COMMANDS, runCommand, type Io } from "./commands.js";

/** Splits a command line into words: spaces separate, quotes group, a backslash escapes. */
export function splitWords(input: string): string[] {
  const words: string[] = [];
  let cur = "";
  let quote: string | undefined;
  let inWord = false;
  for (let i = 0; i < input.length; i++) {
    const ch = input[i]!;
    if (quote) {
      if (ch === quote) quote = undefined;
      else if (ch === "\\" && quote === '"' && i + 1 < input.length) cur += input[++i];
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      inWord = true;
    } else if (ch === "\\" && i + 1 < input.length) {
      cur += input[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (quote) throw new Error("unterminated quote");
  if (inWord) words.push(cur);
  return words;
}

export interface ReplInit {
  historyFile?: string;
  /** Remote names for completion, fetched on demand. */
  remoteNames?: () => Promise<string[]>;
}

/**
 * The interactive client: a `dfs> ` prompt with history and tab completion on a terminal; one command
 * per line, no prompt, when stdin is a pipe. Resolves with the number of commands that failed.
 */
export async function repl(client: DfsClient, io: Io, init: ReplInit = {}): Promise<number> {
  const tty = Boolean((io.stdin as { isTTY?: boolean }).isTTY);
  let remoteCache: string[] = [];
  const completer = (lineText: string): [string[], string] => {
    const words = lineText.split(/\s+/);
    if (words.length <= 1) {
      const names = [...Object.keys(COMMANDS), "exit"].filter((n) => n.startsWith(words[0] ?? ""));
      return [names, words[0] ?? ""];
    }
    const last = words[words.length - 1] ?? "";
    if (init.remoteNames) void init.remoteNames().then((n) => (remoteCache = n)).catch(() => {});
    return [remoteCache.filter((n) => n.startsWith(last)), last];
  };
  const history = tty && init.historyFile ? loadHistory(init.historyFile) : [];
  const rl = readline.createInterface({
    input: io.stdin,
    output: tty ? io.stderr : undefined,
    prompt: "dfs> ",
    terminal: tty,
    completer: tty ? completer : undefined,
    history,
    historySize: 1000,
  });
  let failures = 0;
  if (tty) {
    io.stderr.write("dfs client; `help` lists the commands, `exit` leaves\n");
    rl.prompt();
  }
  for await (const raw of rl) {
    const text = raw.trim();
    if (text && !text.startsWith("#")) {
      if (text === "exit" || text === "quit") break;
      try {
        await runCommand(client, splitWords(text), { ...io, interactive: true });
      } catch (err) {
        failures++;
        io.stderr.write(`error: ${toDfsError(err).message}\n`);
      }
    }
    if (tty) rl.prompt();
  }
  rl.close();
  if (tty && init.historyFile) saveHistory(init.historyFile, (rl as unknown as { history: string[] }).history ?? []);
  return failures;
}

function loadHistory(file: string): string[] {
  try {
    return fs.readFileSync(file, "utf8").split("\n").filter(Boolean).reverse().slice(0, 1000);
  } catch {
    return [];
  }
}

function saveHistory(file: string, lines: string[]): void {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, [...lines].reverse().join("\n") + "\n", { mode: 0o600 });
  } catch {
    // History is a convenience; failing to keep it must not fail the session.
  }
}
