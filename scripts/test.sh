#!/usr/bin/env bash
# Runs every test of the project on real services, on Node 20 (the machine's) and on Node 24.
# The README's test command.
#
# The packages' test tasks run in three lanes side by side (IDEM_TEST_LANES=1 runs them one
# after another): the first two on the machine's Node, split as before (the machine has two
# cores, and much of the second lane's time is spent waiting: outages, brokers, npm installs,
# other runtimes); the third runs every package's tests again under Node 24 (apps/node-binaries),
# with property runs sized down to IDEM_NODE24_PROPERTY_RUNS (25): the properties' full
# counts run on Node 20, Node 24 runs every test of every package, none skipped.
# The Node 24 lane runs only with IDEM_TEST_NODE24=1 (not yet within CI's time budget). Within a lane, one
# package at a time. Every package runs; a package missing from SECOND_LANE runs in the first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --services
pnpm build

SECOND_LANE=(
  @idem/chaos
  @idem/llm-api
  @idem/store-dynamodb
  @idem/lambda
  @idem/consumers
  @idem/runtime-smoke
  @idem/benchmarks
  @idem/pack-check
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

node24=0
if [ "${IDEM_TEST_NODE24:-0}" != "0" ]; then
  node24=1
  # Fails here, before anything ran, when the Node 24 binary is missing.
  bash scripts/test-node.sh 24 node --version >/dev/null
fi
# The Node 24 run of `command...` (scripts/test-node.sh puts Node 24 first on PATH for it,
# and for everything it spawns: pnpm, turbo, vitest, the servers the tests start).
node24_run() {
  IDEM_PROPERTY_RUNS="${IDEM_NODE24_PROPERTY_RUNS:-25}" bash scripts/test-node.sh 24 "$@"
}

if [ "${IDEM_TEST_LANES:-3}" = "1" ]; then
  pnpm test 2>&1 | tee "$tmp/all.log" || status=$?
  if [ "$node24" = 1 ]; then
    echo "---- Node 24 (every package) ----"
    node24_run pnpm test 2>&1 | tee "$tmp/node24.log" || status=$?
    cat "$tmp/node24.log" >>"$tmp/all.log"
  fi
else
  # Only the names this workspace has (a filter that matches nothing would fail the lane).
  known=$(pnpm -r ls --depth -1 --json 2>/dev/null | node -e '
    const list = JSON.parse(require("fs").readFileSync(0, "utf8"));
    console.log(list.map((p) => p.name).filter(Boolean).join("\n"));')
  second=()
  first=()
  for name in "${SECOND_LANE[@]}"; do
    if grep -qx -- "$name" <<<"$known"; then
      second+=(--filter="$name")
      first+=(--filter="!$name")
    fi
  done
  # --only: the builds ran above; the lanes must not replay build outputs under each other.
  pnpm exec turbo run test --only --continue --concurrency=1 "${second[@]}" >"$tmp/lane2.log" 2>&1 &
  lane2=$!
  lane3=
  if [ "$node24" = 1 ]; then
    # The waiting packages first, while the first lane keeps the CPU busy.
    node24_run pnpm exec turbo run test --only --continue --concurrency=1 >"$tmp/node24.log" 2>&1 &
    lane3=$!
  fi
  pnpm exec turbo run test --only --continue --concurrency=1 "${first[@]}" 2>&1 | tee "$tmp/lane1.log" || status=$?
  lane2_status=0
  wait "$lane2" || lane2_status=$?
  echo "---- second lane (${SECOND_LANE[*]}) ----"
  cat "$tmp/lane2.log"
  [ "$lane2_status" = 0 ] || status=$lane2_status
  cat "$tmp/lane1.log" "$tmp/lane2.log" >"$tmp/all.log"
  if [ -n "$lane3" ]; then
    lane3_status=0
    wait "$lane3" || lane3_status=$?
    echo "---- Node 24 lane (every package) ----"
    cat "$tmp/node24.log"
    [ "$lane3_status" = 0 ] || status=$lane3_status
    cat "$tmp/node24.log" >>"$tmp/all.log"
  fi
fi
# One closing line for the whole run, summed over every package's vitest summary (both Nodes),
# and per Node.
sum() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | node -e '
    let passed = 0, failed = 0, skipped = 0;
    for (const line of require("fs").readFileSync(0, "utf8").split("\n")) {
      const m = /\bTests\s+(.*)\(\d+\)\s*$/.exec(line);
      if (!m) continue;
      for (const [, n, what] of m[1].matchAll(/(\d+) (passed|failed|skipped)/g)) {
        if (what === "passed") passed += +n; else if (what === "failed") failed += +n; else skipped += +n;
      }
    }
    console.log(`${process.argv[1]}${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
    if (passed === 0) { console.error("no test ran"); process.exitCode = 1; }
  ' "$2"
}
if [ "$node24" = 1 ]; then
  sum "$tmp/node24.log" "tests on Node 24: " || status=1
fi
sum "$tmp/all.log" "tests: " || status=1
exit "$status"
