#!/usr/bin/env node
// Runs once more, alone, the test files that failed in the lanes of scripts/test.sh, and
// exits 0 only when every failure of every failed lane was such a file and each passed alone.
//
// Why: the lanes run five at a time on a two-core machine (load 10-11), and the suite holds
// hundreds of tests that judge time (leases, outage bounds, recovery windows). One of 6,500
// missing its bound under that load failed whole runs whose every guarantee held.
//
// What it refuses (exit 1, nothing rerun): a lane log without turbo's closing summary (a lane
// cut short), a failed package with no FAIL line (a crash), any unhandled error or rejection
// vitest printed (counted by its section headers, also those after the summary, as a global
// teardown's), more than IDEM_TEST_RERUN_MAX failed files in the run (12: the
// 8,400-test suite's runs on a loaded machine had 4 to 6 files missing a time bound that
// passed alone, and the 14,000-test suite's run at a load average of 28-30 had 9, each of
// which passed alone right after; more than 12 is no longer the odd missed bound), a test script it cannot read as `[VAR=value ...] vitest run [files]
// [--config file] [--exclude glob]` passes joined by `&&`. The one unhandled error taken as failed files:
// vitest's pool not starting a worker in time (`[vitest-pool]: Failed to start forks worker
// for test files ...`), which ran none of them. A package whose test script chains passes
// (store-redis: a second pass on ioredis 6; store-postgres: its fault config) stopped at the
// failed pass: the failed files are rerun in that pass's setting, and every pass after it is
// run whole. A rerun passes on exit 0 with a vitest count of passed tests and none failed.
// Every rerun is printed, passed or not, in the run's closing lines.
//
// usage: node scripts/rerun-failed.mjs <node major or "">|<redis url>|<log> ...
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const ansi = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');
const strip = (text) => text.replace(ansi, '');
const MAX_FILES = Number(process.env.IDEM_TEST_RERUN_MAX || 12);

/**
 * The passes of a package's test script (`test`, or `test:node24` in a Node 24 lane, as
 * scripts/test.sh runs them): env assignments, files, a --config.
 */
function passesOf(root, major) {
  const scripts = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts ?? {};
  const script = (major ? scripts['test:node24'] : scripts.test) ?? '';
  return script.split('&&').map((part) => {
    const words = part.trim().split(/\s+/);
    const env = [];
    while (words.length > 0 && /^[A-Z_][A-Z0-9_]*=/.test(words[0])) env.push(words.shift());
    if (words.shift() !== 'vitest' || words.shift() !== 'run') return undefined;
    const files = [];
    const options = [];
    while (words.length > 0) {
      const word = words.shift();
      // --exclude: the adapters' Node 24 passes leave out their Node-20-only files.
      if ((word === '--config' || word === '--exclude') && words.length > 0)
        options.push(word, words.shift());
      else if (/^[\w./-]+\.test\.[cm]?[jt]s$/.test(word)) files.push(word);
      else return undefined;
    }
    return { env, files, options, text: part.trim() };
  });
}

const reruns = [];
let refused = false;
const refuse = (message) => {
  console.log(`rerun: ${message}: not rerun`);
  refused = true;
};
for (const arg of process.argv.slice(2)) {
  const [major, redisUrl, ...path] = arg.split('|');
  const log = path.join('|');
  const lines = strip(readFileSync(log, 'utf8')).split('\n');
  const lane = log.replace(/^.*\//, '').replace(/\.log$/, '');
  // turbo's closing block: `Tasks:    S successful, T total`, then `Failed:    @a#test, ...`.
  const failedTasks = new Set();
  let tasks;
  for (const line of lines) {
    const summary = /^\s*Tasks:\s+(\d+) successful, (\d+) total/.exec(line);
    if (summary) tasks = { successful: Number(summary[1]), total: Number(summary[2]) };
    if (/^\s*Failed:/.test(line))
      for (const [, name] of line.matchAll(/(@[\w.-]+\/[\w.-]+)#test/g)) failedTasks.add(name);
  }
  if (!tasks) {
    refuse(`${lane} has no turbo summary (cut short?)`);
    continue;
  }
  if (tasks.total - tasks.successful !== failedTasks.size) {
    refuse(`${lane}: ${tasks.total - tasks.successful} failed tasks, ${failedTasks.size} named`);
    continue;
  }
  /** Per package: root, vitest runs seen, failed files by run, error counts. */
  const packages = new Map();
  const of = (pkg) => {
    if (!packages.has(pkg))
      packages.set(pkg, { root: undefined, runs: 0, failed: [], errors: 0, unhandled: 0, pool: 0 });
    return packages.get(pkg);
  };
  // turbo prefixes each line with `<package>:<task>: `, the task being the lane's script.
  const prefix = major
    ? /^(@[\w.-]+\/[\w.-]+):test:node24:(.*)$/
    : /^(@[\w.-]+\/[\w.-]+):test:(.*)$/;
  for (const line of lines) {
    const prefixed = prefix.exec(line);
    if (!prefixed) continue;
    const [, pkg, rest] = prefixed;
    const state = of(pkg);
    const run = /^\s*RUN\s+v\S+\s+(\/\S+)\s*$/.exec(rest);
    if (run) {
      state.root = run[1];
      state.runs++;
      state.failed[state.runs - 1] = new Set();
      continue;
    }
    const counted = /^\s*Errors\s+(\d+) errors?\b/.exec(rest);
    if (counted) state.errors += Number(counted[1]);
    if (/⎯\s*Unhandled (Rejection|Error)\s*⎯/.test(rest)) state.unhandled++;
    const files = state.failed[state.runs - 1];
    // A worker that did not start in time on a saturated machine ran none of its files: those
    // files are rerun, the error is not the suite's (any other unhandled error is).
    const pool = /\[vitest-pool\]: Failed to start \w+ worker for test files (.+?)\.?\s*$/.exec(
      rest,
    );
    if (pool && files && state.root) {
      state.pool++;
      for (const file of pool[1].split(/,\s*/)) {
        const inRoot = relative(state.root, file);
        if (inRoot.startsWith('..') || !/\.test\.[cm]?[jt]s$/.test(inRoot))
          refuse(`${lane}: ${pkg}: a worker error names ${file}, outside ${state.root}`);
        else files.add(inRoot);
      }
    }
    const fail = /^\s*FAIL\s+(\S+\.test\.[cm]?[jt]s)/.exec(rest);
    if (fail && files) files.add(fail[1]);
  }
  for (const pkg of failedTasks) {
    const state = packages.get(pkg);
    if (!state?.root) {
      refuse(`${lane}: ${pkg} failed before vitest ran`);
      continue;
    }
    if (state.errors > state.pool || state.unhandled > state.pool) {
      refuse(`${lane}: ${pkg} printed ${Math.max(state.errors, state.unhandled)} unhandled errors`);
      continue;
    }
    const passes = passesOf(state.root, major);
    if (passes.some((pass) => pass === undefined)) {
      refuse(
        `${lane}: ${pkg}'s test script is not [VAR=...] vitest run [files] [--config f] [--exclude g] passes`,
      );
      continue;
    }
    // The chain stops at a failed pass: the failures are all in the last run seen.
    const last = state.runs - 1;
    const failedFiles = state.failed[last];
    if (state.failed.some((set, i) => i !== last && set.size > 0) || failedFiles.size === 0) {
      refuse(`${lane}: ${pkg} failed with no FAIL line in its last vitest run (a crash?)`);
      continue;
    }
    if (state.runs > passes.length) {
      refuse(`${lane}: ${pkg} ran vitest ${state.runs} times, its script has ${passes.length}`);
      continue;
    }
    const pass = passes[last];
    for (const file of failedFiles)
      reruns.push({
        lane,
        major,
        redisUrl,
        pkg,
        what: file,
        command: [...pass.env, 'vitest', 'run', file, ...pass.options].join(' '),
      });
    for (const after of passes.slice(last + 1))
      reruns.push({
        lane,
        major,
        redisUrl,
        pkg,
        what: `the pass after: ${after.text}`,
        command: after.text,
      });
  }
}
const files = reruns.filter((rerun) => !rerun.what.startsWith('the pass after')).length;
if (files > MAX_FILES)
  refuse(`${files} failed files, more than IDEM_TEST_RERUN_MAX (${MAX_FILES})`);
if (refused || reruns.length === 0) process.exit(1);

let failed = 0;
for (const { lane, major, redisUrl, pkg, what, command } of reruns) {
  const env = { ...process.env, REDIS_URL: redisUrl };
  // test.sh exports IDEM_CHAOS_FILES=side once the chaos run is over, and the chaos app's
  // vitest config then excludes the chaos run's own file: a rerun of it found no test file and
  // failed in a second whatever the run. Unset, the config includes every file and the
  // rerun's file filter picks the one that failed (in either part).
  delete env.IDEM_CHAOS_FILES;
  // As the lane ran it (scripts/test.sh's start_lane).
  if (major) env.IDEM_PROPERTY_RUNS = process.env.IDEM_NODE24_PROPERTY_RUNS || '25';
  const pnpm = ['pnpm', '--filter', pkg, '--fail-if-no-match', 'exec', 'sh', '-c', command];
  const argv = major ? ['bash', 'scripts/test-node.sh', major, ...pnpm] : pnpm;
  const started = Date.now();
  const run = spawnSync(argv[0], argv.slice(1), {
    env,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    timeout: 15 * 60_000,
  });
  const output = strip(`${run.stdout ?? ''}${run.stderr ?? ''}`);
  const counts = [...output.matchAll(/^\s*Tests\s+(.*)\(\d+\)\s*$/gm)].map((m) => m[1].trim());
  const passed =
    run.status === 0 &&
    counts.length > 0 &&
    // A file of `it.fails` rows alone prints "N expected fail" and no "passed".
    counts.every((count) => /\d+ (passed|expected fail)/.test(count) && !/failed/.test(count));
  const seconds = Math.round((Date.now() - started) / 1000);
  const title = `${lane}: ${pkg} ${what}`;
  if (passed) {
    console.log(`rerun: ${title}: passed alone (${counts.join('; ')}, ${seconds} s)`);
  } else {
    failed++;
    console.log(
      `rerun: ${title}: FAILED again (${counts.join('; ') || 'no count'}, exit ${run.status}, ${seconds} s)`,
    );
    console.log(output.split('\n').slice(-60).join('\n'));
  }
}
process.exit(failed === 0 ? 0 : 1);
