import { isIP } from "node:net";
import { DfsError } from "../protocol/errors.js";

export interface HttpAddress {
  host: string;
  port: number;
}

/** Parses `--http HOST:PORT` (`[::1]:9100` for IPv6; port 0 takes any free port). */
export function parseHttpAddress(text: string): HttpAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new DfsError("BAD_REQUEST", `--http: ${JSON.stringify(text)} is not an address like 127.0.0.1:9100`);
  return { host: m[1] ?? m[2]!, port };
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
}
