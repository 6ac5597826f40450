import { generateKey } from '@idem/core';
import { deleteDemoRows } from '../stores/postgres-cleanup.js';
import { connectRedis } from '../stores/redis-connection.js';
import { type FaultProxy, startFaultProxy } from './fault-proxy.js';
import { type ClientCounters, Harness, type ServerCounters } from './harness.js';
import { liveResume } from './live-resume.js';
import {
  batch,
  concurrentDuplicates,
  droppedResponses,
  interruptedStream,
  modelFailures,
  plain,
  replayEverything,
  type Scenario,
  stall,
} from './scenarios.js';
import { type ServerProcess, startServerProcess } from './server-process.js';
import { type Row, renderTable } from './table.js';

/**
 * `pnpm demo`: starts the server, drives it with @idem/client through injected faults, and
 * prints what the clients did against what the server executed and billed. Exits non-zero
 * unless model executions and billed tokens match the logical requests exactly. With
 * REDIS_URL set, the server is also restarted mid-run (SIGTERM with a request in flight).
 */
async function main(): Promise<number> {
  const redisUrl = process.env.REDIS_URL?.trim() || undefined;
  // PostgreSQL when DATABASE_URL is given (and REDIS_URL is not).
  const databaseUrl = redisUrl ? undefined : process.env.DATABASE_URL?.trim() || undefined;
  const env: Record<string, string> = {
    IDEM_KEY_PREFIX: `llm-demo:${generateKey().slice(0, 8)}:`,
    MODEL_CHUNK_DELAY_MS: '10',
    SHUTDOWN_TIMEOUT_MS: '10000',
  };
  // The demo runs on the memory store unless REDIS_URL is given; never on a DynamoDB table.
  env.DYNAMODB_TABLE = '';
  env.DYNAMODB_ENDPOINT = '';
  env.UPSTREAM_URL = '';
  env.UPSTREAM_API_KEY = '';
  if (redisUrl) env.REDIS_URL = redisUrl;
  else env.REDIS_URL = '';
  env.DATABASE_URL = databaseUrl ?? '';

  const started = performance.now();
  let server: ServerProcess = await startServerProcess(env);
  const proxy: FaultProxy = await startFaultProxy(server.url);
  const h = new Harness(proxy.url, server.url);
  const store = redisUrl
    ? `Redis (${redisUrl})`
    : databaseUrl
      ? `PostgreSQL (${databaseUrl.replace(/:[^:@/]*@/, ':***@')})`
      : 'memory';
  console.log(
    `llm-api demo: server ${server.url} on the ${store} store, fault proxy ${proxy.url}\n`,
  );

  const rows: Row[] = [];
  let scripted = 0;
  // A scenario that throws (e.g. retries exhausted) still gets its row; the rest are skipped.
  let broken: { name: string; error: unknown } | undefined;
  const measure = async (name: string, body: () => Promise<number>) => {
    if (broken) return;
    running = { name, since: performance.now() };
    const client0: ClientCounters = { ...h.client };
    const server0: ServerCounters = await h.server();
    try {
      scripted += await body();
    } catch (error) {
      broken = { name, error };
    }
    const server1 = await h.server();
    rows.push({
      scenario: broken ? `${name} (FAILED)` : name,
      logical: h.client.logical - client0.logical,
      attempts: h.client.attempts - client0.attempts,
      replays: h.client.replays - client0.replays,
      executions: server1.completed - server0.completed,
      failed: server1.failed - server0.failed,
      billed: server1.billedTokens - server0.billedTokens,
    });
  };
  const scenario = (s: Scenario) => measure(s.name, async () => (await s.run(h)).scriptedFailures);

  let restartNote: string | undefined;
  let ledger: ServerCounters;
  try {
    for (const s of [
      plain,
      droppedResponses,
      modelFailures,
      stall,
      concurrentDuplicates,
      batch,
      interruptedStream,
      liveResume(),
    ]) {
      await scenario(s);
    }
    if (redisUrl) {
      // A second server process on the same Redis: the retry of a cut stream reaches it.
      const other = await startServerProcess(env);
      try {
        await scenario(liveResume(other.url));
      } finally {
        await other.stop();
      }
    }
    if (redisUrl || databaseUrl) {
      await measure('server restarted mid-request', async () => {
        const result = await restartMidRequest(h, proxy, server, env);
        server = result.server;
        h.serverUrl = server.url;
        restartNote = result.note;
        return 0;
      });
      await scenario(replayEverything('every request re-sent after restart'));
    } else {
      await scenario(replayEverything('every request re-sent'));
    }
    ledger = await h.server();
  } finally {
    await proxy.close();
    const code = await server.stop();
    if (process.env.DEMO_SERVER_LOG) console.log(server.output());
    if (code !== 0) console.error(`The server exited with ${code}:\n${server.output()}`);
    if (redisUrl) await deleteDemoKeys(redisUrl, env.IDEM_KEY_PREFIX as string);
    if (databaseUrl) await deleteDemoRows(databaseUrl, env.IDEM_KEY_PREFIX as string);
  }
  const final = rows.reduce(
    (t, r) => ({
      scenario: 'total',
      logical: t.logical + r.logical,
      attempts: t.attempts + r.attempts,
      replays: t.replays + r.replays,
      executions: t.executions + r.executions,
      failed: t.failed + r.failed,
      billed: t.billed + r.billed,
    }),
    { scenario: 'total', logical: 0, attempts: 0, replays: 0, executions: 0, failed: 0, billed: 0 },
  );
  console.log(renderTable([...rows, final]));
  if (restartNote) console.log(`\n${restartNote}`);

  const answered = h.requests.reduce((sum, r) => sum + r.tokens, 0);
  const ids = new Set(h.requests.map((r) => r.messageId));
  const checks: [string, boolean][] = [
    [
      `model executions (${final.executions}) = logical requests (${final.logical})`,
      final.executions === final.logical,
    ],
    [
      `messages billed (${ledger.billedMessages}) = logical requests (${final.logical})`,
      ledger.billedMessages === final.logical,
    ],
    [
      `tokens billed (${final.billed}) = tokens in the answers clients got (${answered})`,
      final.billed === answered,
    ],
    [
      `billed message ids = the ids clients got (${ids.size} distinct)`,
      sameSet(ledger.messageIds, ids),
    ],
    [
      `injected model failures (${final.failed}) = scripted (${scripted})`,
      final.failed === scripted,
    ],
  ];
  if (broken) {
    const { name, error } = broken;
    const reason =
      error instanceof Error
        ? `${error.message}${error.cause instanceof Error ? ` (${error.cause.message})` : ''}`
        : String(error);
    checks.unshift([`every scenario completed ("${name}" failed: ${reason})`, false]);
  }
  console.log('');
  for (const [text, ok] of checks) console.log(`${ok ? 'PASS' : 'FAIL'}  ${text}`);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(
    `\nfaults injected by the proxy: ${proxy.injected.dropped} answers dropped after commit, ${proxy.injected.cut} streams cut; ${seconds} s`,
  );
  return checks.every(([, ok]) => ok) ? 0 : 1;
}

function sameSet(a: readonly string[], b: ReadonlySet<string>): boolean {
  return a.length === b.size && a.every((x) => b.has(x));
}

/**
 * Redis or PostgreSQL only: a request stalls on the model while the server gets SIGTERM. The server stops
 * taking requests, finishes the one in flight (billing it and recording its outcome) and
 * exits; a second request sent meanwhile is refused and retried by the client until the new
 * server is up. Returns the new server.
 */
async function restartMidRequest(
  h: Harness,
  proxy: FaultProxy,
  old: ServerProcess,
  env: Record<string, string>,
): Promise<{ server: ServerProcess; note: string }> {
  const name = 'server restarted mid-request';
  const patient = h.idempotentFetch({ maxAttempts: 60, maxDelayMs: 250, attemptTimeoutMs: 5_000 });
  const slowPrompt = `[stall:1200] In flight during SIGTERM ${generateKey().slice(0, 8)}`;
  const latePrompt = `Sent while the server restarts ${generateKey().slice(0, 8)}`;
  const inFlight = h.postMessage(slowPrompt, { fetch: patient });
  await new Promise((resolve) => setTimeout(resolve, 400));
  const exitCode = old.stop();
  await new Promise((resolve) => setTimeout(resolve, 100));
  const late = h.postMessage(latePrompt, { fetch: patient });
  // The new process boots meanwhile, but takes traffic only once the old one has exited.
  const next = startServerProcess(env);
  const code = await exitCode;
  const server = await next;
  proxy.retarget(server.url);
  const [a, b] = await Promise.all([inFlight, late]);
  h.record(
    {
      key: a.key,
      path: '/api/messages',
      body: { prompt: slowPrompt, model: 'local-1' },
      auth: undefined,
      messageId: a.id,
      tokens: a.tokens,
    },
    name,
  );
  h.record(
    {
      key: b.key,
      path: '/api/messages',
      body: { prompt: latePrompt, model: 'local-1' },
      auth: undefined,
      messageId: b.id,
      tokens: b.tokens,
    },
    name,
  );
  if (code !== 0) throw new Error(`The old server exited with ${code}:\n${old.output()}`);
  return {
    server,
    note: `restart: the old server got SIGTERM with a request in flight, finished it and exited ${code}; the new server (${server.url}) replays everything from ${env.DATABASE_URL ? 'PostgreSQL' : 'Redis'}.`,
  };
}

/** Removes what this run wrote to Redis (records, ledger, counters under its own prefix). */
async function deleteDemoKeys(url: string, prefix: string): Promise<void> {
  const client = await connectRedis(url, 5_000);
  try {
    const stream = client.scanStream({ match: `${prefix}*`, count: 200 });
    for await (const keys of stream as AsyncIterable<string[]>) {
      if (keys.length > 0) await client.del(...keys);
    }
  } finally {
    client.disconnect();
  }
}

/** The scenario under way, named by the watchdog (a slow machine and a hang look alike otherwise). */
let running: { name: string; since: number } | undefined;
const watchdog = setTimeout(() => {
  const during = running
    ? ` during "${running.name}" (${((performance.now() - running.since) / 1000).toFixed(1)} s in it)`
    : ' before the first scenario';
  console.error(`llm-api demo: took longer than 90 s${during}; giving up`);
  process.exit(1);
}, 90_000);
watchdog.unref();

main()
  .then(
    (code) => code,
    (error: unknown) => {
      console.error('llm-api demo failed:', error);
      return 1;
    },
  )
  .then((code) => process.exit(code));
