import type { ListEntry, StatusReply } from "../../protocol/directory.js";
import type { S3KeyInfo, S3KeySecret } from "../../protocol/s3keys.js";

type Status = StatusReply & { directory: { reachedAt?: string } };

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ").trimEnd()).join("\n");
}

function ago(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

/** The human form of `status`. */
export function formatStatus(s: Status): string {
  const up = s.nodes.filter((n) => n.role === "storage" && n.state === "up").length;
  const storage = s.nodes.filter((n) => n.role === "storage").length;
  const lines = [
    `directory ${s.directory.url}${reachedAt(s)}  replicas ${s.directory.replicas} (min ${s.directory.minReplicas})  dead after ${s.directory.deadAfterSeconds}s`,
    `storage nodes ${up}/${storage} up  files ${s.files}  data ${bytes(s.bytes)}  chunks ${s.chunks}  under-replicated ${s.underReplicated}`,
    "",
  ];
  if (s.nodes.length === 0) lines.push("no nodes registered");
  else {
    const rows = [["ROLE", "ID", "STATE", "URL", "ZONE", "FREE", "USED", "CHUNKS", "SEEN"]];
    for (const n of s.nodes) {
      rows.push([
        n.role, n.id.slice(0, 12), n.state, n.url, n.zone || "-",
        n.role === "storage" ? bytes(n.free) : "-", n.role === "storage" ? bytes(n.used) : "-",
        n.role === "storage" ? String(n.chunks) : "-", ago(n.lastSeen),
      ]);
    }
    lines.push(table(rows));
  }
  if (s.underReplicated > 0) lines.push("", `warning: ${s.underReplicated} chunk(s) have fewer than ${s.directory.replicas} live replicas`);
  return lines.join("\n");
}

/** Which of the client's addresses reached the directory, when it is not the one the directory gives itself. */
function reachedAt(s: Status): string {
  const at = s.directory.reachedAt;
  return at && at !== s.directory.url ? ` (reached at ${at})` : "";
}

export function formatList(entries: ListEntry[]): string {
  if (entries.length === 0) return "";
  return table(entries.map((e) => [bytes(e.size), `v${e.version}`, new Date(e.mtime).toISOString().replace(/\.\d+Z$/, "Z"), e.path]));
}

const isoSeconds = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");

/** The human form of `s3 keys list`. */
export function formatS3Keys(keys: S3KeyInfo[]): string {
  if (keys.length === 0) return "no S3 access keys";
  return table([["ID", "CREATED", "BUCKETS"], ...keys.map((k) => [k.id, isoSeconds(k.created), k.buckets.join(" ")])]);
}

/** The human form of `s3 keys add`: the only time the secret is printed. */
export function formatNewS3Key(k: S3KeySecret): string {
  return [`id       ${k.id}`, `secret   ${k.secret}`, `buckets  ${k.buckets.join(" ")}`].join("\n");
}
