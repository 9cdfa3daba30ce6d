/** The status page: one self-contained document that reads the directory's API. */
export function statusPage(): string {
  return "<!doctype html><title>dfs</title><p>status page</p>";
}
