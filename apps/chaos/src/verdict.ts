import type { Attempt, LogicalRequest } from './driver.js';

/** What the upstream counted for one logical id (see upstream.ts). */
export interface ExecutionCount {
  /** Model executions run to completion. */
  completed: number;
  /** The first piece of each completed answer (it carries the execution's nonce). */
  answers: readonly string[];
}

/** Which measurements are promises in a row (the others are reported, not judged). */
export interface RowPromises {
  /** Zero logical requests with a final answer may have run the model twice. */
  zeroTwice: boolean;
  /** Zero keys may have given clients two different 2xx answers. */
  zeroDifferentAnswers: boolean;
  /** Every target must answer 2xx within the recovery limit after the fault ends. */
  recovery: boolean;
  /** Highest app RSS allowed, in MiB, when memory is judged in this row. */
  rssLimitMiB?: number;
  /**
   * A client whose last answer was `503 store-full` got the bounded store's documented
   * answer (its budget is taken by live records): counted apart, not as never completed.
   */
  storeFullIsAnAnswer?: boolean;
  /**
   * At least this many logical requests must complete (every client a 2xx). With
   * `storeFullIsAnAnswer`, a store that wrongly refused every key as full would otherwise
   * pass the row: it must first take as many keys as its budget surely holds.
   */
  minCompleted?: number;
}

/** The problem type of @idem/http's and the app's `503` for a full store. */
export const STORE_FULL_PROBLEM = 'https://idem.dev/problems/store-full';

/** The limits every row shares. */
export interface Limits {
  /** No request may take longer than this (an attempt the client timed out counts). */
  boundMs: number;
  /** Service must answer 2xx within this long of the store's (or app's) return. */
  recoveryLimitMs: number;
  /** The longest store outage a zero-twice promise covers (see Profile). */
  outageWindowMs?: number;
}

/** Everything one row measured. */
export interface RowMeasurements {
  requests: readonly LogicalRequest[];
  /** Recovery probes (they count for 500s and latency like any request). */
  probes: readonly Attempt[];
  executions: ReadonlyMap<string, ExecutionCount>;
  /** Longest time from a fault's end to 2xx on every target; undefined = never; null = n/a. */
  recoveryMs: number | undefined | null;
  maxRssMiB: number;
  /** Promises the scenario itself found broken (e.g. an exit code). */
  scenarioBroken?: readonly string[];
  /** Each store outage the fault caused, from the fault to the store's first answer. */
  outagesMs?: readonly number[];
}

/** One line of the table, and the promises it broke. */
export interface RowResult {
  fault: string;
  requests: number;
  attempts: number;
  /** Logical requests with a final answer whose model ran to completion more than once. */
  twice: number;
  /** Keys whose clients got two different 2xx bodies. */
  differentAnswers: number;
  /** Logical requests at least one of whose clients never got a 2xx. */
  neverCompleted: number;
  /**
   * Of those, the ones whose clients without a 2xx were last answered `503 store-full`;
   * excluded from `neverCompleted` where the row's promises allow it.
   */
  storeFull: number;
  /** Answers 500 or other 5xx except 503: the upstream never fails, so each is the app's. */
  serverErrors: number;
  /** 503 answers (the expected answer while the store is down). */
  unavailable: number;
  /** Attempts that got no answer (connection refused or reset): proof an app fault bit. */
  connectionErrors: number;
  maxLatencyMs: number;
  /** Attempts that took longer than the bound, or were timed out by the client. */
  outlived: number;
  recoveryMs: number | undefined | null;
  maxRssMiB: number;
  promises: RowPromises;
  /** One sentence per broken promise; empty when the row holds. */
  broken: string[];
  /** A broken row's timeline (attempts per second, keys run twice, the apps' output). */
  timeline?: string[];
  /** The Node versions the row's app instances ran on, restarted ones included. */
  appNodes?: string[];
  /** The longest store outage the fault caused, when it measured one. */
  longestOutageMs?: number;
  /**
   * Set when a store outage outlasted {@link Limits.outageWindowMs} in a row that promises
   * zero twice: the fault was not the one the row judges (a restart slow under load).
   */
  premiseMissed?: string;
  /** With {@link premiseMissed}: every broken promise is one a second run explains. */
  premiseExplains?: boolean;
  /** Why the row ran a second time (its first run, broken with {@link premiseMissed}). */
  rerunBecause?: string;
}

/** The `content` of a 2xx `/api/messages` body, or undefined. */
function contentOf(body: string): string | undefined {
  try {
    const parsed = JSON.parse(body) as { content?: unknown };
    return typeof parsed.content === 'string' ? parsed.content : undefined;
  } catch {
    return undefined;
  }
}

/** Judges one row: counts, then names every promise the counts break. */
export function judgeRow(
  fault: string,
  promises: RowPromises,
  limits: Limits,
  m: RowMeasurements,
): RowResult {
  const all: Attempt[] = [...m.requests.flatMap((r) => r.attempts), ...m.probes];
  let twice = 0;
  let differentAnswers = 0;
  let neverCompleted = 0;
  let storeFull = 0;
  let completed = 0;
  let unexplained = 0;
  for (const request of m.requests) {
    const answered = request.answers.filter((a): a is string => a !== undefined);
    if (answered.length === request.answers.length) completed += 1;
    if (answered.length < request.answers.length) {
      // Each client without a 2xx: was its last answer the full store's?
      const full = request.answers.every((answer, client) => {
        if (answer !== undefined) return true;
        const last = request.attempts.filter((a) => a.client === client).at(-1);
        return last?.status === 503 && last.problem === STORE_FULL_PROBLEM;
      });
      if (full) storeFull += 1;
      if (!(full && promises.storeFullIsAnAnswer)) neverCompleted += 1;
    }
    if (new Set(answered).size > 1) differentAnswers += 1;
    const count = m.executions.get(request.id);
    if (answered.length > 0 && (count?.completed ?? 0) > 1) twice += 1;
    // Every answer must be one the model produced for this request (b: byte for byte).
    for (const body of new Set(answered)) {
      const content = contentOf(body);
      if (content === undefined || !count?.answers.some((head) => content.startsWith(head))) {
        unexplained += 1;
      }
    }
  }
  const serverErrors = all.filter((a) => (a.status ?? 0) >= 500 && a.status !== 503).length;
  const unavailable = all.filter((a) => a.status === 503).length;
  const connectionErrors = all.filter((a) => a.error !== undefined && a.error !== 'TimeoutError');
  const maxLatencyMs = all.reduce((max, a) => Math.max(max, a.latencyMs), 0);
  const outlived = all.filter((a) => a.latencyMs > limits.boundMs || a.error === 'TimeoutError');

  const broken: string[] = [];
  if (promises.zeroTwice && twice > 0) {
    broken.push(`${twice} keys ran the model to completion twice (promise: zero)`);
  }
  if (promises.zeroDifferentAnswers && differentAnswers > 0) {
    broken.push(`${differentAnswers} keys gave clients two different answers (promise: zero)`);
  }
  // What a second execution explains: an outage past the lease may cause exactly these.
  const secondRuns = broken.length;
  if (unexplained > 0) {
    broken.push(`${unexplained} answers were not produced by the model for their request`);
  }
  if (neverCompleted > 0) {
    broken.push(`${neverCompleted} requests never completed once faults stopped (promise: zero)`);
  }
  if (promises.minCompleted !== undefined && completed < promises.minCompleted) {
    broken.push(
      `only ${completed} requests completed (promise: at least ${promises.minCompleted}, what the store must take before it may be full)`,
    );
  }
  if (serverErrors > 0) {
    broken.push(`${serverErrors} answers were 5xx other than 503 (promise: zero 500s)`);
  }
  if (outlived.length > 0) {
    broken.push(
      `${outlived.length} requests outlived their bound of ${limits.boundMs} ms ` +
        `(longest ${maxLatencyMs} ms)`,
    );
  }
  const recovery = m.recoveryMs;
  if (promises.recovery && recovery === undefined) {
    broken.push('service never answered 2xx again after the fault ended');
  } else if (promises.recovery && typeof recovery === 'number') {
    if (recovery > limits.recoveryLimitMs) {
      broken.push(
        `recovery took ${recovery} ms after the fault ended (promise: ${limits.recoveryLimitMs} ms)`,
      );
    }
  }
  if (promises.rssLimitMiB !== undefined && m.maxRssMiB > promises.rssLimitMiB) {
    broken.push(
      `app RSS reached ${Math.round(m.maxRssMiB)} MiB (bound: ${promises.rssLimitMiB} MiB)`,
    );
  }
  const refused = m.requests.filter((r) => r.rejected !== undefined);
  if (refused.length > 0) {
    broken.push(`${refused.length} requests were refused with a final 4xx`);
  }
  broken.push(...(m.scenarioBroken ?? []));
  const longestOutageMs =
    m.outagesMs && m.outagesMs.length > 0 ? Math.max(...m.outagesMs) : undefined;
  const premiseMissed =
    promises.zeroTwice &&
    longestOutageMs !== undefined &&
    limits.outageWindowMs !== undefined &&
    longestOutageMs > limits.outageWindowMs
      ? `a store outage lasted ${longestOutageMs} ms, past the ${limits.outageWindowMs} ms the zero-twice promise covers`
      : undefined;
  const onlySecondRuns = broken.length > 0 && broken.length === secondRuns;

  return {
    fault,
    requests: m.requests.length,
    attempts: all.length,
    twice,
    differentAnswers,
    neverCompleted,
    storeFull,
    serverErrors,
    unavailable,
    connectionErrors: connectionErrors.length,
    maxLatencyMs,
    outlived: outlived.length,
    recoveryMs: m.recoveryMs,
    maxRssMiB: m.maxRssMiB,
    promises,
    broken,
    ...(longestOutageMs !== undefined ? { longestOutageMs } : {}),
    ...(premiseMissed ? { premiseMissed, premiseExplains: onlySecondRuns } : {}),
  };
}
