import { parser } from "../protocol/common.js";
import { dirSchemas, type ListEntry } from "../protocol/directory.js";
import type { DirectoryView } from "../roles/directory.js";
import type { History } from "./history.js";

/** Files listed at most for one folder of the namespace browser. */
const LIST_LIMIT = 10_000;

export interface FolderListing {
  prefix: string;
  /** Full paths of the sub-folders, each ending in "/". */
  folders: string[];
  files: ListEntry[];
  /** More than the listing limit lie under the prefix: some folders or files are missing. */
  truncated: boolean;
}

const lookupBody = parser(dirSchemas.lookup);
const listBody = parser(dirSchemas.list);

/** The directory's JSON API under /api/: what the status page reads; null for a path it does not serve. */
export function directoryApi(view: DirectoryView, history: History): (path: string, query: URLSearchParams) => Promise<unknown> | null {
  return (path, query) => {
    switch (path) {
      case "/api/status":
        return view.status();
      case "/api/history":
        return Promise.resolve(history.list());
      case "/api/file":
        return view.lookup(lookupBody({ path: query.get("path") ?? "" }).path);
      case "/api/ls":
        return listFolder(view, query.get("prefix") ?? "/", query.get("limit"));
      default:
        return null;
    }
  };
}

/** The immediate children of a folder, from the flat list of every file under it. */
async function listFolder(view: DirectoryView, prefixText: string, limitText: string | null): Promise<FolderListing> {
  let prefix = prefixText.startsWith("/") ? prefixText : "/" + prefixText;
  if (!prefix.endsWith("/")) prefix += "/";
  const limit = limitText === null ? LIST_LIMIT : Number(limitText);
  const body = listBody({ prefix, limit });
  const entries = await view.list(body.prefix, body.limit);
  const folders = new Set<string>();
  const files: ListEntry[] = [];
  for (const e of entries) {
    const rest = e.path.slice(prefix.length);
    const slash = rest.indexOf("/");
    if (slash < 0) files.push(e);
    else folders.add(prefix + rest.slice(0, slash + 1));
  }
  return { prefix, folders: [...folders], files, truncated: entries.length >= body.limit };
}
