import { type AppInstance, startApp } from './app-instance.js';
import type { AppNode } from './app-nodes.js';
import { debugTimeline, debugTwice, type FaultEvent } from './debug-report.js';
import { type Attempt, drive, probeRecovery, warmKeyedMs, watchReads } from './driver.js';
import { sleep } from './processes.js';
import type { Profile } from './profile.js';
import { type StoreHandle, type StoreKind, startStore } from './stores.js';
import type { UpstreamProcess } from './upstream-process.js';
import { type ExecutionCount, judgeRow, type RowPromises, type RowResult } from './verdict.js';

/** What a scenario can do to the running system while the traffic flows. */
export interface Stage {
  profile: Profile;
  store: StoreHandle;
  /** The instances currently routed to. */
  readonly apps: readonly (AppInstance | undefined)[];
  /** Takes instance `index` out of routing and kills it with SIGKILL. */
  killApp(index: number): Promise<void>;
  /** SIGTERM to instance `index` (still routed until it exits); resolves with its exit code. */
  termApp(index: number): Promise<number | string>;
  /** Attempts of the chaos clients in flight at instance `index` right now. */
  inFlightAt(index: number): number;
  /** Starts a fresh instance in slot `index` and routes to it. */
  startApp(index: number): Promise<AppInstance>;
  /**
   * The fault ended now: measure recovery on `targets` (default: every routed instance).
   * `warm`: what one keyed request took on each target before the fault (from `warmKeyed`),
   * taken out of the keyed probes' time.
   */
  restored(targets?: readonly string[], warm?: ReadonlyMap<string, number>): void;
  /** What one keyed request takes on each routed instance now (see `warmKeyedMs`). */
  warmKeyed(): Promise<ReadonlyMap<string, number>>;
  /** A promise the scenario itself checked and found broken. */
  broken(message: string): void;
  /** Notes a fault event for the CHAOS_DEBUG timeline. */
  mark(what: string): void;
  /** A store outage the fault caused lasted `ms` (from the fault to the store's first answer). */
  outage(ms: number): void;
}

/** One row of the table. */
export interface Scenario {
  id: string;
  /** The `fault` column. */
  fault: string;
  store: StoreKind;
  instances: number;
  requests(p: Profile): number;
  /** How long `inject` takes, to spread the traffic before, during and after it. */
  faultMs(p: Profile): number;
  promises(p: Profile): RowPromises;
  /** Appended to every prompt (e.g. `size:1048576`). */
  promptExtra?: string;
  /** Run only in the full profile (or when named in `CHAOS_ROWS`). @default false */
  fullOnly?: boolean;
  /** Every n-th logical request is a stream to `/v1/chat/completions`. @default none */
  streamEvery?: number;
  /** Clients per key. @default 2 */
  clientsPerKey?: number;
  /** Runs the fault, calling `stage.restored()` each time the system is whole again. */
  inject(stage: Stage): Promise<void>;
}

/** Runs one row on fresh processes (store, proxy, apps) and judges it. Always cleans up. */
export async function runRow(
  scenario: Scenario,
  profile: Profile,
  upstream: UpstreamProcess,
  log: (line: string) => void,
  appEntry?: string,
  /** The Nodes instance 0, 1, … of this row run on, in turn (default: this Node). */
  nodes: readonly AppNode[] = [],
  /**
   * The tag of the row's requests (their keys, and the upstream model's counts by key):
   * a row run again needs one of its own, or the upstream, which counts for the whole suite,
   * adds the first run's executions to its keys (every key "ran twice").
   */
  tag: string = scenario.id,
): Promise<RowResult> {
  const store = await startStore(scenario.store);
  const slots: (AppInstance | undefined)[] = [];
  const everyApp: AppInstance[] = [];
  let generation = 0;
  const env = {
    ...store.env,
    UPSTREAM_URL: upstream.url,
    UPSTREAM_TIMEOUT_MS: '30000',
    IDEM_LEASE_MS: String(profile.leaseMs),
    IDEM_KEY_PREFIX: `chaos:${scenario.id}:${Date.now().toString(36)}:`,
    SHUTDOWN_TIMEOUT_MS: '10000',
  };
  const launch = async (index: number) => {
    const node = nodes.length > 0 ? nodes[index % nodes.length] : undefined;
    const name = `llm-api[${scenario.id}#${index}.${generation++}${node ? ` ${node.version}` : ''}]`;
    const app = await startApp(name, env, appEntry, node?.path);
    everyApp.push(app);
    slots[index] = app;
    return app;
  };
  const sampler = setInterval(() => {
    for (const app of everyApp) app.sampleRss();
  }, 250);
  const probes: Attempt[] = [];
  const inFlight = new Map<string, number>();
  const events: FaultEvent[] = [];
  const recoveries: Promise<number | undefined>[] = [];
  const scenarioBroken: string[] = [];
  const outagesMs: number[] = [];
  // Until the fault is over nobody knows when clients should stop; set on the way out too.
  let deadline = Date.now() + 3_600_000;
  let traffic: Promise<unknown> | undefined;
  try {
    for (let i = 0; i < scenario.instances; i++) await launch(i);
    const routed = () => slots.filter((a): a is AppInstance => a !== undefined).map((a) => a.url);
    const stage: Stage = {
      profile,
      store,
      apps: slots,
      async killApp(index) {
        const app = slots[index];
        slots[index] = undefined;
        await app?.kill9();
      },
      async termApp(index) {
        const app = slots[index];
        const code = (await app?.term(profile.leaseMs * 5 + 10_000)) ?? 'none';
        slots[index] = undefined;
        return code;
      },
      startApp: launch,
      inFlightAt: (index) => {
        const app = slots[index];
        return app ? (inFlight.get(app.url) ?? 0) : 0;
      },
      warmKeyed: () =>
        warmKeyedMs(
          routed(),
          `${scenario.id}-${recoveries.length}`,
          profile.attemptTimeoutMs,
          probes,
        ),
      restored(targets, warm) {
        events.push({ at: Date.now(), what: 'restored' });
        recoveries.push(
          probeRecovery({
            tag: `${scenario.id}-${recoveries.length}`,
            targets: targets ?? routed(),
            since: Date.now(),
            ...(warm === undefined ? {} : { warmKeyedMs: warm }),
            maxMs: profile.probeMaxMs,
            attemptTimeoutMs: profile.attemptTimeoutMs,
            attempts: probes,
          }),
        );
      },
      broken: (message) => scenarioBroken.push(message),
      mark: (what) => events.push({ at: Date.now(), what }),
      outage(ms) {
        outagesMs.push(ms);
        events.push({ at: Date.now(), what: `store answers (down ${ms} ms)` });
      },
    };

    // The system must work before any fault, or the row measures nothing: one 2xx from
    // every instance first (DynamoDB Local's JVM is slow to warm up).
    const warm = await probeRecovery({
      tag: `${scenario.id}-warmup`,
      targets: routed(),
      since: Date.now(),
      maxMs: 30_000,
      attemptTimeoutMs: profile.attemptTimeoutMs,
      attempts: [],
    });
    if (warm === undefined) {
      throw new Error(`${scenario.id}: no instance answered 2xx within 30 s before any fault`);
    }
    const faultMs = scenario.faultMs(profile);
    const count = scenario.requests(profile);
    const spreadMs = Math.max(
      profile.faultAtMs + faultMs + profile.tailMs,
      (count / profile.maxRatePerSec) * 1_000,
    );
    const started = Date.now();
    deadline = started + spreadMs + faultMs + profile.settleMs + 60_000;
    const driven = drive({
      tag,
      count,
      spreadMs,
      deadline: () => deadline,
      attemptTimeoutMs: profile.attemptTimeoutMs,
      instances: routed,
      inFlight,
      clientsPerKey: scenario.clientsPerKey ?? 2,
      ...(scenario.promptExtra ? { promptExtra: scenario.promptExtra } : {}),
      ...(scenario.streamEvery ? { streamEvery: scenario.streamEvery } : {}),
    });
    const stopWatching = new AbortController();
    const watching = watchReads({
      instances: routed,
      path: '/v1/usage',
      everyMs: 2_000,
      attemptTimeoutMs: profile.attemptTimeoutMs,
      attempts: probes,
      signal: stopWatching.signal,
    });
    traffic = driven.finally(() => {
      stopWatching.abort();
      return watching;
    });
    await sleep(profile.faultAtMs);
    log(`  ${scenario.id}: injecting (${(faultMs / 1000).toFixed(1)} s)`);
    events.push({ at: Date.now(), what: 'fault' });
    const injectLimit = faultMs + 60_000;
    const injected = await Promise.race([
      scenario.inject(stage).then(() => true),
      sleep(injectLimit).then(() => false),
    ]);
    if (!injected) scenarioBroken.push(`the fault injection did not finish in ${injectLimit} ms`);
    deadline = Math.max(Date.now(), started + spreadMs) + profile.settleMs;
    log(`  ${scenario.id}: fault over; traffic until every client has an answer or the deadline`);
    const requests = await driven;
    stopWatching.abort();
    await watching;
    const times = await Promise.all(recoveries);
    // Let an execution that was still streaming finish before its count is read.
    await sleep(300);
    const counts = await upstream.readCounts();
    const executions = new Map<string, ExecutionCount>();
    for (const request of requests) {
      const count = counts.get(request.id);
      if (count) executions.set(request.id, { completed: count.completed, answers: count.answers });
    }
    const recoveryMs =
      times.length === 0
        ? null
        : times.some((t) => t === undefined)
          ? undefined
          : Math.max(...(times as number[]));
    // The timeline of the row: always with CHAOS_DEBUG, and for a row that broke a promise
    // (so a CI log shows what happened, not only that it did).
    const timeline = () => [
      ...everyApp.map(
        (app) => `  --- ${app.name} at ${app.url}, output (tail) ---\n${app.output()}`,
      ),
      ...debugTimeline([...requests.flatMap((r) => r.attempts), ...probes], started, events),
      ...debugTwice(requests, counts, started, events),
    ];
    if (process.env.CHAOS_DEBUG) for (const line of timeline()) log(line);
    // An instance that died by itself (a crash on a store fault) is a broken promise even
    // when the other one answered every retry and its recovery was measured before it died.
    for (const app of everyApp) {
      if (app.exited && !app.stoppedBySuite) {
        scenarioBroken.push(`${app.name} exited by itself (${await app.exitCode})`);
      }
    }
    const result = judgeRow(scenario.fault, scenario.promises(profile), profile, {
      requests,
      probes,
      executions,
      recoveryMs,
      maxRssMiB: Math.max(0, ...everyApp.map((a) => a.maxRssMiB)),
      scenarioBroken,
      outagesMs,
    });
    result.appNodes = [...new Set(everyApp.map((app) => app.nodeVersion))];
    if (result.broken.length > 0) {
      result.timeline = [`${scenario.id} broke a promise; its timeline:`, ...timeline()];
      if (!process.env.CHAOS_DEBUG) for (const line of result.timeline) log(line);
    }
    return result;
  } finally {
    deadline = 0;
    clearInterval(sampler);
    await Promise.all(everyApp.map((app) => (app.exited ? undefined : app.kill9())));
    await traffic?.catch(() => undefined);
    await store.close();
  }
}
