#!/usr/bin/env bash
# The main job: the demo on the embedded memory store. The README's first command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
pnpm demo
