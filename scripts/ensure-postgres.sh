#!/usr/bin/env bash
# Makes sure PostgreSQL's server programs (initdb, postgres, pg_basebackup) are installed, for the
# tests and the bench, which start throwaway databases. Quick and silent when they are already there; otherwise
# installs Debian's `postgresql` package, which needs root. DFS_PG_BIN names another folder of
# server programs (a source build, say) and skips the install.
set -euo pipefail

have() {
  if [ -n "${DFS_PG_BIN:-}" ]; then
    [ -x "$DFS_PG_BIN/postgres" ] && [ -x "$DFS_PG_BIN/initdb" ] && [ -x "$DFS_PG_BIN/pg_basebackup" ]
  else
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
  fi
}

if have; then exit 0; fi

if [ -n "${DFS_PG_BIN:-}" ]; then
  echo "ensure-postgres: DFS_PG_BIN=$DFS_PG_BIN does not hold postgres, initdb and pg_basebackup" >&2
  exit 1
fi
# The package's own cluster is never used: the tests and the bench make their own data folders.
exec bash "$(dirname "$0")/ensure-packages.sh" 'postgresql=/usr/lib/postgresql/*/bin/postgres'
