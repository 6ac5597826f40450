import { type AppNode, appNodes } from './app-nodes.js';
import { postgresUnavailable } from './postgres-server.js';
import { stopAllChildren } from './processes.js';
import type { Profile } from './profile.js';
import { runRow, type Scenario } from './run-row.js';
import { scenarios as allScenarios } from './scenarios.js';
import { dynamoDbUnavailable } from './stores.js';
import { startUpstreamProcess } from './upstream-process.js';
import { judgeRow, type RowResult } from './verdict.js';

/** Options of {@link runChaos}. */
export interface ChaosOptions {
  /** Row ids to run (default: all). */
  only?: readonly string[];
  log?: (line: string) => void;
  /** The app to drive. @default apps/llm-api/dist/main.js (or CHAOS_APP_ENTRY) */
  appEntry?: string;
  /** The Nodes the app instances run on, in turn. @default {@link appNodes} of the environment */
  nodes?: readonly AppNode[];
}

/** What a run found. */
export interface ChaosResult {
  profile: Profile['name'];
  rows: RowResult[];
  /** Rows not run, with the reason (no Java or no PostgreSQL outside CI). */
  skipped: string[];
  /** Every broken promise, naming its row; empty when the run holds. */
  broken: string[];
  durationMs: number;
}

/**
 * Runs the rows one after the other, each on fresh processes, against one upstream model
 * that counts executions. Every process it started is stopped by PID before it returns
 * or throws.
 */
export async function runChaos(profile: Profile, options: ChaosOptions = {}): Promise<ChaosResult> {
  const log = options.log ?? (() => undefined);
  const started = Date.now();
  const skipped: string[] = [];
  const rows: RowResult[] = [];
  const chosen = allScenarios.filter((s) =>
    options.only ? options.only.includes(s.id) : !s.fullOnly || profile.name === 'full',
  );
  if (options.only) {
    const unknown = options.only.filter((id) => !allScenarios.some((s) => s.id === id));
    if (unknown.length > 0) throw new Error(`unknown rows: ${unknown.join(', ')}`);
  }
  const nodes = options.nodes ?? appNodes(process.env);
  log(`app instances on ${nodes.map((n) => `Node ${n.version}`).join(' and ')}`);
  const upstream = await startUpstreamProcess({
    chunks: profile.modelChunks,
    chunkDelayMs: profile.modelChunkDelayMs,
  });
  try {
    for (const scenario of chosen) {
      if (Date.now() - started > profile.runLimitMs) {
        // A row the run had no time for is a failure, never a silent pass.
        rows.push(
          failedRow(scenario, profile, `the run passed its limit of ${profile.runLimitMs} ms`),
        );
        continue;
      }
      const service = scenario.store === 'postgres' ? 'PostgreSQL' : 'DynamoDB Local';
      const missing =
        scenario.store === 'dynamodb'
          ? await dynamoDbUnavailable()
          : scenario.store === 'postgres'
            ? postgresUnavailable()
            : undefined;
      if (missing && process.env.CI) {
        // In CI a missing service is a failure too.
        rows.push(failedRow(scenario, profile, `${service} cannot start: ${missing}`));
        continue;
      }
      if (missing) {
        skipped.push(`${scenario.id}: ${service} cannot start here: ${missing}`);
        log(`- ${scenario.id}: skipped (${missing})`);
        continue;
      }
      const rowStart = Date.now();
      log(`- ${scenario.id}: ${scenario.fault}`);
      // Row r starts its instances at nodes[r % n]: a one-instance row runs on each in turn.
      const turn = chosen.indexOf(scenario) % nodes.length;
      const rowNodes = [...nodes.slice(turn), ...nodes.slice(0, turn)];
      const run = (tag?: string) =>
        runRow(scenario, profile, upstream, log, options.appEntry, rowNodes, tag).catch(
          // A row that cannot run is a failed row, not a crashed suite: the others still run.
          (error: unknown) =>
            failedRow(scenario, profile, (error as Error).message ?? String(error)),
        );
      let row = await run();
      if (row.premiseMissed && row.premiseExplains) {
        // The fault outlasted what the row judges (a store restart slow under load): its
        // breakage is the documented window, not a verdict. Once more, on fresh processes; a
        // second miss fails the row with both runs' reasons.
        const first = `${row.premiseMissed}; it broke: ${row.broken.join('; ')}`;
        log(`  ${scenario.id}: ${first}; running the row again`);
        // Keys of its own: the upstream's counts of the first run's keys stay as they are.
        row = await run(`${scenario.id}-again`);
        row.rerunBecause = `the first run's ${first}`;
        if (row.broken.length > 0 && row.premiseMissed) {
          row.broken.push(`the first run missed the premise too (${first})`);
        }
      }
      rows.push(row);
      log(
        `  ${scenario.id}: ${row.broken.length === 0 ? 'PASS' : 'FAIL'} in ${((Date.now() - rowStart) / 1000).toFixed(1)} s${row.longestOutageMs === undefined ? '' : ` (longest store outage ${row.longestOutageMs} ms)`}`,
      );
    }
  } finally {
    await upstream.close();
    await stopAllChildren();
  }
  return {
    profile: profile.name,
    rows,
    skipped,
    broken: rows.flatMap((r) => r.broken.map((b) => `${r.fault}: ${b}`)),
    durationMs: Date.now() - started,
  };
}

/** The row of a scenario that could not run: every figure empty, the reason as broken. */
function failedRow(scenario: Scenario, profile: Profile, why: string): RowResult {
  return judgeRow(scenario.fault, scenario.promises(profile), profile, {
    requests: [],
    probes: [],
    executions: new Map(),
    recoveryMs: null,
    maxRssMiB: 0,
    scenarioBroken: [`the row could not run: ${why}`],
  });
}
