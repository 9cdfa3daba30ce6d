import { DfsError, toDfsError } from "../protocol/errors.js";
import { parsePgUrl } from "./pg-url.js";

const EXAMPLE = "postgres://user@host:5432/dfs";

/**
 * Checks `--metadata`: `sqlite` (the embedded store) or a PostgreSQL URL. A mistake is a sentence at
 * start-up rather than a directory that keeps retrying a server that is not there. No message shows
 * the password, not even one that the URL's own syntax would misplace.
 */
export function parseMetadataOption(text: string): string {
  const value = text.trim();
  if (value === "sqlite") return value;
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(value)?.[1];
  if (scheme === undefined) {
    // Without a scheme, user:password@host is not recognisable as a URL, so nothing that may hold one is echoed.
    const shown = value.includes("@") ? "the value" : JSON.stringify(value);
    throw new DfsError("BAD_REQUEST", `--metadata: ${shown} is neither sqlite nor a PostgreSQL URL like ${EXAMPLE}`);
  }
  if (scheme !== "postgres" && scheme !== "postgresql") {
    throw new DfsError("BAD_REQUEST", `--metadata: unknown back end ${scheme}://; use sqlite or a PostgreSQL URL like ${EXAMPLE}`);
  }
  const masked = maskPassword(value);
  let hosts: string;
  try {
    hosts = JSON.stringify(parsePgUrl(masked).hosts);
  } catch (err) {
    throw new DfsError("BAD_REQUEST", `--metadata: ${toDfsError(err).message}`);
  }
  // The masked URL parses; if the real one does not, or names other servers, its password holds a
  // character that ends the user part early ("/", "?", "#" or "@").
  let same = false;
  try {
    same = JSON.stringify(parsePgUrl(value).hosts) === hosts;
  } catch {
    same = false;
  }
  if (!same) throw new DfsError("BAD_REQUEST", `--metadata: the password in ${masked} holds a character that must be percent-encoded (/ ? # @ become %2F %3F %23 %40)`);
  return value;
}

/**
 * The URL with the password replaced by ***: everything from the first ":" of the user part to the
 * "@" that ends it, taken as the last "@" before the query (a raw "@" may sit in the password, and a
 * query may hold one too).
 */
function maskPassword(url: string): string {
  const start = url.indexOf("://") + 3;
  const first = url.indexOf("@", start);
  if (first < 0) return url;
  const query = url.slice(first).search(/[?#]/);
  const at = url.lastIndexOf("@", query < 0 ? url.length : first + query);
  const colon = url.indexOf(":", start);
  if (colon < 0 || colon > at) return url;
  return `${url.slice(0, colon)}:***${url.slice(at)}`;
}
