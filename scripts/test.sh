#!/usr/bin/env bash
# Runs every test of the project on real services. The README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --services
pnpm build
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
pnpm test 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every package's vitest summary.
sed 's/\x1b\[[0-9;]*m//g' "$log" | node -e '
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
