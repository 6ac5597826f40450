/**
 * `pnpm bench`: idem against its peers, every suite in this one process, one table per suite.
 *
 *   pnpm bench                     every suite, default profile (a few minutes)
 *   pnpm bench -- redis http       some suites (or BENCH_SUITES=redis,http)
 *   BENCH_PROFILE=smoke pnpm bench tiny sizes: proves it runs, figures are noise
 *
 * Env: BENCH_ROUNDS (alternating rounds, median taken; 3 by default, 1 in smoke),
 * REDIS_URL, DYNAMODB_ENDPOINT (else DynamoDB Local is started), BENCH_JSON (also write the
 * tables as JSON to this file).
 */
import { writeFileSync } from 'node:fs';
import { runDynamoDbSuite } from './dynamodb-suite.js';
import { runHttpSuite } from './http-suite.js';
import { describeMachine, loadNow } from './machine.js';
import { runMemorySuite } from './memory-suite.js';
import { type Profile, profileFromEnv } from './profile.js';
import { describeRedis, runRedisSuite } from './redis-suite.js';
import { type BenchReport, renderSuite, type SuiteResult } from './result.js';

const SUITES: Record<
  string,
  (profile: Profile, log: (line: string) => void) => Promise<SuiteResult>
> = {
  redis: runRedisSuite,
  dynamodb: runDynamoDbSuite,
  memory: runMemorySuite,
  http: runHttpSuite,
};

/** The suites named on the command line or in BENCH_SUITES, in the order given; all by default. */
function selectSuites(args: readonly string[], env = process.env.BENCH_SUITES): string[] {
  const named = [...args.filter((a) => a !== '--'), ...(env ? env.split(',') : [])]
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = named.filter((s) => !(s in SUITES));
  if (unknown.length > 0) {
    throw new Error(
      `unknown suite ${unknown.join(', ')}: choose from ${Object.keys(SUITES).join(', ')}`,
    );
  }
  return named.length > 0 ? [...new Set(named)] : Object.keys(SUITES);
}

async function main(): Promise<void> {
  const profile = profileFromEnv();
  const chosen = selectSuites(process.argv.slice(2));
  const log = (line: string) =>
    console.error(`[bench ${(performance.now() / 1000).toFixed(1)} s] ${line}`);
  const machine = describeMachine();
  if (chosen.includes('redis'))
    machine.push(await describeRedis(process.env.REDIS_URL || 'redis://127.0.0.1:6379'));
  machine.push(
    `profile ${profile.name}: every figure is the median of ${profile.rounds} alternating round(s), all suites in one process (pid ${process.pid})`,
  );
  console.log(`# idem benchmark\n\n${machine.map((l) => `- ${l}`).join('\n')}\n`);
  const report: BenchReport = {
    machine,
    profile: profile.name,
    rounds: profile.rounds,
    suites: [],
  };
  for (const id of chosen) {
    log(`${id}: starting`);
    const started = performance.now();
    const suite = await SUITES[id]!(profile, log);
    suite.notes.push(
      `${((performance.now() - started) / 1000).toFixed(0)} s, load average after: ${loadNow()}`,
    );
    report.suites.push(suite);
    console.log(`${renderSuite(suite)}\n`);
  }
  if (process.env.BENCH_JSON)
    writeFileSync(process.env.BENCH_JSON, `${JSON.stringify(report, null, 2)}\n`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
