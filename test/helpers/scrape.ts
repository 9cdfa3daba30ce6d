import { spawnSync } from "node:child_process";
import https from "node:https";
import http from "node:http";

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A GET over HTTP or HTTPS; `tls` carries the CA to trust and, optionally, a client certificate. */
export function get(url: string, opts: { tls?: { ca: string; cert?: string; key?: string }; headers?: Record<string, string> } = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith("https:") ? https : http;
    const req = mod.get(url, { ...opts.tls, headers: opts.headers, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d)).on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on("error", reject);
  });
}

/** Series of a Prometheus text exposition: `name{labels}` -> value, labels as written. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

/** The sum of every series of `name` whose labels include all of `labels`. */
export function metric(series: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const [key, value] of series) {
    const brace = key.indexOf("{");
    if ((brace < 0 ? key : key.slice(0, brace)) !== name) continue;
    if (Object.entries(labels).every(([k, v]) => key.includes(`{${k}="${v}"`) || key.includes(`,${k}="${v}"`))) sum += value;
  }
  return sum;
}

/** Runs `promtool check metrics` on a scrape; a missing promtool fails with the way to install it. */
export function promtoolCheck(text: string): { code: number; output: string } {
  const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  if (r.error) throw new Error(`promtool cannot run (${r.error.message}); install it with scripts/ensure-packages.sh prometheus=/usr/bin/promtool`);
  return { code: r.status ?? -1, output: r.stdout + r.stderr };
}
