#!/usr/bin/env bash
# Makes sure the PostgreSQL the tests use answers: DATABASE_URL when set (checked, never
# started), else 127.0.0.1:5432 with database `test` (trust auth), started through the
# Debian cluster tools (pg_ctlcluster) when it is installed but not running. Fails with a
# message saying how to provide one otherwise. Safe to run again.
set -euo pipefail

how_to="Start PostgreSQL on 127.0.0.1:5432 (Debian: apt-get install postgresql, then pg_ctlcluster <version> main start), or point the tests at another server: DATABASE_URL=postgres://user:password@host:port/database"

if [ -n "${DATABASE_URL:-}" ]; then
  if ! command -v psql >/dev/null 2>&1; then
    echo "bootstrap: DATABASE_URL is set; psql is not installed, so it is not checked here (the tests will)." >&2
    exit 0
  fi
  if ! psql "$DATABASE_URL" -Atqc 'SELECT 1' >/dev/null 2>&1; then
    echo "bootstrap: DATABASE_URL does not answer (psql \"\$DATABASE_URL\" -c 'SELECT 1' failed). $how_to" >&2
    exit 1
  fi
  exit 0
fi

ready() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "bootstrap: no PostgreSQL client tools (pg_isready) on this machine. $how_to" >&2
  exit 1
fi

if ! ready; then
  if command -v pg_lsclusters >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null 2>&1; then
    # The cluster on port 5432 (the first one listed if several).
    cluster=$(pg_lsclusters --no-header 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }')
    if [ -z "$cluster" ]; then
      echo "bootstrap: no PostgreSQL cluster on port 5432 (pg_lsclusters). $how_to" >&2
      exit 1
    fi
    echo "bootstrap: starting PostgreSQL cluster $cluster (pg_ctlcluster)"
    # shellcheck disable=SC2086
    pg_ctlcluster $cluster start || true
  else
    echo "bootstrap: PostgreSQL does not answer on 127.0.0.1:5432 and pg_ctlcluster is not installed. $how_to" >&2
    exit 1
  fi
  for _ in $(seq 1 100); do ready && break; sleep 0.1; done
  if ! ready; then
    echo "bootstrap: PostgreSQL did not come up on 127.0.0.1:5432. $how_to" >&2
    exit 1
  fi
fi

# The tests' database: created once when missing (trust auth for user postgres).
psql_local() { psql -h 127.0.0.1 -p 5432 -U postgres -Atq "$@"; }
if ! psql_local -d test -c 'SELECT 1' >/dev/null 2>&1; then
  if psql_local -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
    echo "bootstrap: creating database test"
    psql_local -d postgres -c 'CREATE DATABASE test' >/dev/null
  else
    echo "bootstrap: PostgreSQL answers on 127.0.0.1:5432 but user postgres cannot log in without a password (trust auth expected). $how_to" >&2
    exit 1
  fi
fi
