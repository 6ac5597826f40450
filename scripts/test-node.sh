#!/usr/bin/env bash
# Runs the test command (scripts/test.sh) under another Node major: `bash scripts/test-node.sh 24`;
# or a command given after the major: `bash scripts/test-node.sh 24 pnpm --filter @idem/core test`.
# The binaries come from npm with the workspace (apps/node-binaries: node20/22/24-<platform>);
# IDEM_SMOKE_NODE<major> points at another.
set -euo pipefail
cd "$(dirname "$0")/.."
major="${1:?usage: scripts/test-node.sh <major> [command...]}"
shift
override="IDEM_SMOKE_NODE${major}"
if [[ -n "${!override:-}" ]]; then
  bin="$(dirname "${!override}")"
else
  bin="$(ls -d apps/node-binaries/node_modules/node"${major}"-*/bin 2>/dev/null | head -n 1 || true)"
fi
if [[ -z "$bin" || ! -x "$bin/node" ]]; then
  echo "No Node ${major} binary: run pnpm install (apps/node-binaries' optionalDependencies carry node${major}-<platform>), or set ${override}" >&2
  exit 1
fi
export PATH="$(cd "$bin" && pwd):$PATH"
version="$(node --version)"
if [[ "$version" != "v${major}."* ]]; then
  echo "node on PATH is ${version}, not Node ${major}" >&2
  exit 1
fi
echo "Testing under Node ${version} ($(command -v node))"
if [[ $# -gt 0 ]]; then
  "$@"
else
  bash scripts/test.sh
fi
