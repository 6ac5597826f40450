#!/usr/bin/env bash
# Runs every test of the project on real services. The README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --services
pnpm build
pnpm test
