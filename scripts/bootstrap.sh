#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: pnpm, the dependencies, and (for the
# tests) a running Redis, a running PostgreSQL, RabbitMQ and NATS JetStream, and the DynamoDB
# Local download. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION=12.4.2
if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version 2>/dev/null)" != "$PNPM_VERSION" ]; then
  echo "bootstrap: installing pnpm@$PNPM_VERSION"
  npm install -g "pnpm@$PNPM_VERSION" >/dev/null
fi

if [ "${CI:-}" = "true" ]; then
  pnpm install --frozen-lockfile
else
  pnpm install --frozen-lockfile || pnpm install
fi

if [ "${1:-}" = "--services" ]; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    if ! command -v redis-server >/dev/null 2>&1; then
      echo "bootstrap: no Redis answers on 127.0.0.1:6379 and redis-server is not installed." >&2
      echo "           Install it (apt-get install redis-server) or set REDIS_URL." >&2
      exit 1
    fi
    echo "bootstrap: starting redis-server on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
    for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  if [ -f scripts/dynamodb-local.mjs ]; then node scripts/dynamodb-local.mjs fetch; fi
  bash scripts/postgres-local.sh
  bash scripts/brokers-local.sh
fi
