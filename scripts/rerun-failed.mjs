#!/usr/bin/env node
// Runs once more, alone, the test files that failed in the lanes of scripts/test.sh, and
// exits 0 only when every failure of every failed lane was such a file and each passed alone.
//
// Why: the lanes run five at a time on a two-core machine (load 10-11), and the suite holds
// hundreds of tests that judge time (leases, outage bounds, recovery windows). One of 6,500
// missing its bound under that load failed whole runs whose every guarantee held. A file that
// fails again alone fails the run; a lane that failed in any other way (a crash, an unhandled
// error vitest caught, a package that failed with no FAIL line) fails it without a rerun. The
// one unhandled error taken as a failed file: vitest's pool not starting a worker in time
// (`[vitest-pool]: Failed to start forks worker for test files ...`), which ran none of them.
// Every rerun is printed, passed or not, in the run's closing lines.
//
// usage: node scripts/rerun-failed.mjs <log>:<node major or "">:<redis url> ...
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const ansi = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');
const strip = (text) => text.replace(ansi, '');
/** store-redis's second pass (its package.json `test`): these files also run on ioredis 6. */
const IOREDIS6_FILES = new Set([
  'test/ioredis-version.test.ts',
  'test/conformance-standalone.test.ts',
  'test/conformance-cluster.test.ts',
  'test/redis-store.test.ts',
  'test/round-trips.test.ts',
]);
/** Files run by a package's other vitest config. */
const CONFIG_OF = new Map([['@idem/store-postgres test/fault.test.ts', 'vitest.fault.config.ts']]);

const reruns = [];
let refused = false;
for (const arg of process.argv.slice(2)) {
  const [log, major, ...url] = arg.split(':');
  const redisUrl = url.join(':');
  const lines = strip(readFileSync(log, 'utf8')).split('\n');
  const lane = log.replace(/^.*\//, '').replace(/\.log$/, '');
  const failedTasks = new Set();
  for (const line of lines)
    if (/^\s*Failed:/.test(line))
      for (const [, name] of line.matchAll(/(@[\w.-]+\/[\w.-]+)#test/g)) failedTasks.add(name);
  const files = new Map();
  const addFile = (pkg, file) => {
    if (!files.has(pkg)) files.set(pkg, new Set());
    files.get(pkg).add(file);
  };
  /** Per package: errors vitest counted ("Errors  N error"), and those of its worker pool. */
  const errors = new Map();
  const poolErrors = new Map();
  for (const line of lines) {
    const prefixed = /^(@[\w.-]+\/[\w.-]+):test:(.*)$/.exec(line);
    if (!prefixed) continue;
    const [, pkg, rest] = prefixed;
    const counted = /^\s*Errors\s+(\d+) errors?\b/.exec(rest);
    if (counted) errors.set(pkg, (errors.get(pkg) ?? 0) + Number(counted[1]));
    // A worker that did not start in time on a saturated machine ran none of its files: those
    // files are rerun, the error is not the suite's (any other unhandled error is).
    const pool = /\[vitest-pool\]: Failed to start \w+ worker for test files (.+?)\.?\s*$/.exec(
      rest,
    );
    if (pool) {
      poolErrors.set(pkg, (poolErrors.get(pkg) ?? 0) + 1);
      for (const path of pool[1].split(/,\s*/)) {
        const relative = /\/(?:packages|apps|benchmarks)\/[^/]+\/(.+)$/.exec(path)?.[1];
        if (relative) addFile(pkg, relative);
      }
    }
    const fail = /^\s*FAIL\s+(\S+\.test\.[cm]?[jt]s)/.exec(rest);
    if (fail) addFile(pkg, fail[1]);
  }
  for (const [pkg, count] of errors)
    if (count > (poolErrors.get(pkg) ?? 0)) {
      console.log(`rerun: ${lane}: ${pkg} reported ${count} unhandled error(s): not rerun`);
      refused = true;
    }
  if (failedTasks.size === 0 && files.size === 0) {
    console.log(`rerun: ${lane} failed with no failed package nor FAIL line (a crash?): not rerun`);
    refused = true;
  }
  for (const pkg of failedTasks)
    if (!files.has(pkg)) {
      console.log(`rerun: ${lane}: ${pkg} failed with no FAIL line: not rerun`);
      refused = true;
    }
  for (const [pkg, set] of files)
    for (const file of set) {
      const config = CONFIG_OF.get(`${pkg} ${file}`);
      const env = { ...process.env, REDIS_URL: redisUrl };
      if (major) env.IDEM_PROPERTY_RUNS = process.env.IDEM_NODE24_PROPERTY_RUNS ?? '25';
      reruns.push({ lane, major, pkg, file, config, env });
      if (pkg === '@idem/store-redis' && IOREDIS6_FILES.has(file))
        reruns.push({
          lane,
          major,
          pkg,
          file,
          config,
          env: {
            ...env,
            IDEM_IOREDIS: '6',
            IDEM_PROPERTY_RUNS: process.env.IDEM_IOREDIS6_PROPERTY_RUNS ?? '25',
          },
        });
    }
}
if (refused) process.exit(1);

let failed = 0;
for (const { lane, major, pkg, file, config, env } of reruns) {
  const vitest = ['pnpm', '--filter', pkg, 'exec', 'vitest', 'run', file];
  if (config) vitest.push('--config', config);
  const command = major ? ['bash', 'scripts/test-node.sh', major, ...vitest] : vitest;
  const what = `${lane}: ${pkg} ${file}${env.IDEM_IOREDIS ? ' (ioredis 6)' : ''}`;
  const started = Date.now();
  const run = spawnSync(command[0], command.slice(1), {
    env,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    timeout: 15 * 60_000,
  });
  const output = strip(`${run.stdout ?? ''}${run.stderr ?? ''}`);
  const counts = /\bTests\s+(.*)\(\d+\)\s*$/m.exec(output)?.[1]?.trim() ?? 'no count';
  const seconds = Math.round((Date.now() - started) / 1000);
  if (run.status === 0) {
    console.log(`rerun: ${what}: passed alone (${counts}, ${seconds} s)`);
  } else {
    failed++;
    console.log(`rerun: ${what}: FAILED again (${counts}, exit ${run.status}, ${seconds} s)`);
    console.log(output.split('\n').slice(-60).join('\n'));
  }
}
process.exit(failed === 0 && reruns.length > 0 ? 0 : 1);
