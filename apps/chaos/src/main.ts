import { stopAllChildren } from './processes.js';
import { profileFromEnv } from './profile.js';
import { runChaos } from './run.js';
import { formatBroken, formatTable } from './table.js';

/**
 * `pnpm chaos`: runs every row of CHAOS_PROFILE (short|full; CHAOS_ROWS=id,id picks rows),
 * prints the table, and exits 1 when a promise is broken (2 when the suite itself failed).
 */
async function main(): Promise<number> {
  const profile = profileFromEnv(process.env);
  const only = process.env.CHAOS_ROWS?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  console.log(
    `chaos: profile ${profile.name}, lease ${profile.leaseMs} ms, bound ${profile.boundMs} ms`,
  );
  const result = await runChaos(profile, {
    ...(only && only.length > 0 ? { only } : {}),
    log: (line) => console.log(line),
  });
  console.log('');
  console.log(formatTable(result.rows));
  console.log('');
  console.log(
    '* reported, not a promise in this row (records lost with the store, an outage or a ' +
      'dead executor longer than the lease: the documented window).',
  );
  for (const row of result.rows) {
    if (row.rerunBecause) console.log(`rerun    ${row.fault}: ${row.rerunBecause}`);
  }
  for (const line of result.skipped) console.log(`skipped  ${line}`);
  console.log(`run: ${(result.durationMs / 1000).toFixed(1)} s`);
  const broken = formatBroken(result.rows);
  for (const line of broken) console.log(line);
  if (broken.length > 0) {
    console.log(`chaos: FAIL, ${broken.length} broken promises`);
    return 1;
  }
  console.log('chaos: PASS, every promise held');
  return 0;
}

// Ctrl-C, and what CI runners, `timeout` and `kill` send: every process the suite started is
// stopped by PID before it exits (unhandled, SIGTERM ended the suite at once and left them
// running). Exit status 128 + the signal's number, as a shell reports it.
let interrupted = false;
for (const [signal, number] of [
  ['SIGINT', 2],
  ['SIGTERM', 15],
  ['SIGHUP', 1],
] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`chaos: ${signal}, stopping every process it started`);
    void stopAllChildren().then(() => process.exit(128 + number));
  });
}

main().then(
  (code) => process.exit(code),
  async (error: unknown) => {
    console.error('chaos: the suite itself failed:', error);
    await stopAllChildren();
    process.exit(2);
  },
);
