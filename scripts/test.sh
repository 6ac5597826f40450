#!/usr/bin/env bash
# Runs every test of the project on real services. The README's test command.
#
# The packages' test tasks run in two lanes side by side (IDEM_TEST_LANES=1 runs them one
# after another): the machine has two cores, and much of the second lane's time is spent
# waiting (outages, brokers, npm installs, other runtimes). Within a lane, one package at a
# time. Every package runs; a package missing from SECOND_LANE runs in the first.
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
if [ "${IDEM_TEST_LANES:-2}" = "1" ]; then
  pnpm test 2>&1 | tee "$tmp/all.log" || status=$?
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
  pnpm exec turbo run test --only --continue --concurrency=1 "${first[@]}" 2>&1 | tee "$tmp/lane1.log" || status=$?
  lane2_status=0
  wait "$lane2" || lane2_status=$?
  echo "---- second lane (${SECOND_LANE[*]}) ----"
  cat "$tmp/lane2.log"
  [ "$lane2_status" = 0 ] || status=$lane2_status
  cat "$tmp/lane1.log" "$tmp/lane2.log" >"$tmp/all.log"
fi
# One closing line for the whole run, summed over every package's vitest summary.
sed 's/\x1b\[[0-9;]*m//g' "$tmp/all.log" | node -e '
  let passed = 0, failed = 0, skipped = 0;
  for (const line of require("fs").readFileSync(0, "utf8").split("\n")) {
    const m = /\bTests\s+(.*)\(\d+\)\s*$/.exec(line);
    if (!m) continue;
    for (const [, n, what] of m[1].matchAll(/(\d+) (passed|failed|skipped)/g)) {
      if (what === "passed") passed += +n; else if (what === "failed") failed += +n; else skipped += +n;
    }
  }
  console.log(`tests: ${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
  if (passed === 0) { console.error("no test ran"); process.exitCode = 1; }
' || status=1
exit "$status"
