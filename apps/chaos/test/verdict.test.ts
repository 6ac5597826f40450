import { describe, expect, it } from 'vitest';
import type { Attempt, LogicalRequest } from '../src/driver.js';
import { formatBroken, formatTable } from '../src/table.js';
import {
  type ExecutionCount,
  judgeRow,
  type RowPromises,
  STORE_FULL_PROBLEM,
} from '../src/verdict.js';

const strict: RowPromises = { zeroTwice: true, zeroDifferentAnswers: true, recovery: true };
const limits = { boundMs: 10_000, recoveryLimitMs: 2_000 };

const body = (id: string, execution: number) =>
  JSON.stringify({ id: `msg_${id}`, content: `head ${id}#${execution} rest` });

const ok = (latencyMs = 200): Attempt => ({
  client: 0,
  instance: 'http://a',
  startedAt: 0,
  latencyMs,
  status: 201,
});

/** A logical request both of whose clients got the first execution's answer. */
function healthy(id: string): { request: LogicalRequest; count: ExecutionCount } {
  return {
    request: { id, key: `k-${id}`, attempts: [ok(), ok()], answers: [body(id, 1), body(id, 1)] },
    count: { completed: 1, answers: [`head ${id}#1`] },
  };
}

function measure(rows: { request: LogicalRequest; count: ExecutionCount }[], extra = {}) {
  return {
    requests: rows.map((r) => r.request),
    probes: [],
    executions: new Map(rows.map((r) => [r.request.id, r.count])),
    recoveryMs: 500,
    maxRssMiB: 100,
    ...extra,
  };
}

describe('judgeRow', () => {
  it('passes a row where every promise held', () => {
    const row = judgeRow('clean', strict, limits, measure([healthy('a'), healthy('b')]));
    expect(row.broken).toEqual([]);
    expect(row).toMatchObject({ requests: 2, attempts: 4, twice: 0, differentAnswers: 0 });
  });

  it('flags a synthetic double execution (the upstream ran a key to completion twice)', () => {
    const twice = healthy('a');
    twice.count = { completed: 2, answers: ['head a#1', 'head a#2'] };
    const row = judgeRow('double', strict, limits, measure([twice, healthy('b')]));
    expect(row.twice).toBe(1);
    expect(row.broken).toEqual(['1 keys ran the model to completion twice (promise: zero)']);
  });

  it('reports but does not judge a double execution where it is not a promise', () => {
    const twice = healthy('a');
    twice.count = { completed: 2, answers: ['head a#1', 'head a#2'] };
    const row = judgeRow('volatile', { ...strict, zeroTwice: false }, limits, measure([twice]));
    expect(row.twice).toBe(1);
    expect(row.broken).toEqual([]);
    expect(formatTable([row])).toContain('1*');
  });

  it('does not count as twice an execution whose key never got an answer', () => {
    const lost = healthy('a');
    lost.request.answers = [undefined, undefined];
    lost.count = { completed: 2, answers: ['head a#1', 'head a#2'] };
    const row = judgeRow('x', { ...strict }, limits, measure([lost]));
    expect(row.twice).toBe(0);
    expect(row.neverCompleted).toBe(1);
  });

  it('counts a key refused by a full store apart only where the row allows it', () => {
    const full = healthy('a');
    const refused = (client: number, problem?: string): Attempt => ({
      ...ok(),
      client,
      status: 503,
      ...(problem ? { problem } : {}),
    });
    full.request.attempts = [refused(0, STORE_FULL_PROBLEM), refused(1, STORE_FULL_PROBLEM)];
    full.request.answers = [undefined, undefined];
    full.count = { completed: 0, answers: [] };
    // A key whose last answer was "unavailable" is never completed, whatever the row says.
    const down = healthy('b');
    down.request.attempts = [refused(0, STORE_FULL_PROBLEM), refused(0), refused(1)];
    down.request.answers = [undefined, undefined];
    down.count = { completed: 0, answers: [] };
    const memory = { ...strict, recovery: false, storeFullIsAnAnswer: true };
    const allowed = judgeRow('memory', memory, limits, measure([full, down]));
    expect(allowed).toMatchObject({ neverCompleted: 1, storeFull: 1 });
    expect(allowed.broken).toEqual([
      '1 requests never completed once faults stopped (promise: zero)',
    ]);
    expect(formatTable([allowed])).toContain('1 (1 full)');
    const strictRow = judgeRow('strict', strict, limits, measure([full]));
    expect(strictRow).toMatchObject({ neverCompleted: 1, storeFull: 1 });
  });

  it('flags clients given two different answers for one key', () => {
    const split = healthy('a');
    split.request.answers = [body('a', 1), body('a', 2)];
    split.count = { completed: 2, answers: ['head a#1', 'head a#2'] };
    const row = judgeRow('split', { ...strict, zeroTwice: false }, limits, measure([split]));
    expect(row.differentAnswers).toBe(1);
    expect(row.broken).toEqual(['1 keys gave clients two different answers (promise: zero)']);
  });

  it('flags an answer the model never produced for that request', () => {
    const forged = healthy('a');
    forged.request.answers = [body('b', 1), body('b', 1)];
    const row = judgeRow('forged', strict, limits, measure([forged]));
    expect(row.broken).toEqual(['1 answers were not produced by the model for their request']);
  });

  it('marks a row whose store outage outlasted the covered window, and whether that explains its breakage', () => {
    const window = { ...limits, outageWindowMs: 2_200 };
    const twice = () => {
      const t = healthy('a');
      t.count = { completed: 2, answers: ['head a#1', 'head a#2'] };
      return t;
    };
    // Within the window: judged as usual, nothing to explain it.
    const inside = judgeRow(
      'inside',
      strict,
      window,
      measure([twice()], { outagesMs: [900, 2_200] }),
    );
    expect(inside.longestOutageMs).toBe(2_200);
    expect(inside.premiseMissed).toBeUndefined();
    expect(inside.broken).toHaveLength(1);
    // Past it, only a second run broken: the outage explains it.
    const past = judgeRow('past', strict, window, measure([twice()], { outagesMs: [900, 2_201] }));
    expect(past.premiseMissed).toBe(
      'a store outage lasted 2201 ms, past the 2200 ms the zero-twice promise covers',
    );
    expect(past.premiseExplains).toBe(true);
    expect(past.broken).toEqual(['1 keys ran the model to completion twice (promise: zero)']);
    // Past it, with a 500 as well: a long outage explains no 500.
    const failed = twice();
    failed.request.attempts = [ok(), { ...ok(), status: 500 }];
    const also = judgeRow('also', strict, window, measure([failed], { outagesMs: [3_000] }));
    expect(also.premiseMissed).toBeDefined();
    expect(also.premiseExplains).toBe(false);
    // A row that does not promise zero twice, or measured no outage: nothing to miss.
    const lax = { ...strict, zeroTwice: false };
    expect(
      judgeRow('lax', lax, window, measure([twice()], { outagesMs: [9_000] })).premiseMissed,
    ).toBeUndefined();
    expect(judgeRow('none', strict, window, measure([twice()])).premiseMissed).toBeUndefined();
  });

  it('flags a 500 (and a 502) but not a 503', () => {
    const a = healthy('a');
    a.request.attempts.push({ ...ok(), status: 500 }, { ...ok(), status: 502 });
    a.request.attempts.push({ ...ok(), status: 503 }, { ...ok(), status: 503 });
    const row = judgeRow('errors', strict, limits, measure([a]));
    expect(row).toMatchObject({ serverErrors: 2, unavailable: 2 });
    expect(row.broken).toEqual(['2 answers were 5xx other than 503 (promise: zero 500s)']);
  });

  it('counts 500s of recovery probes too', () => {
    const probe: Attempt = { ...ok(), client: -1, status: 500 };
    const row = judgeRow('probe', strict, limits, measure([healthy('a')], { probes: [probe] }));
    expect(row.serverErrors).toBe(1);
  });

  it('flags requests never completed', () => {
    const half = healthy('a');
    half.request.answers = [body('a', 1), undefined];
    const row = judgeRow('stuck', strict, limits, measure([half]));
    expect(row.neverCompleted).toBe(1);
    expect(row.broken).toEqual(['1 requests never completed once faults stopped (promise: zero)']);
  });

  it('flags requests that outlived their bound, and client timeouts', () => {
    const slow = healthy('a');
    slow.request.attempts.push(ok(12_000), {
      ...ok(15_000),
      status: undefined,
      error: 'TimeoutError',
    });
    const row = judgeRow('slow', strict, limits, measure([slow]));
    expect(row.outlived).toBe(2);
    expect(row.maxLatencyMs).toBe(15_000);
    expect(row.broken).toEqual(['2 requests outlived their bound of 10000 ms (longest 15000 ms)']);
  });

  it('flags a slow recovery and a recovery that never came, and skips n/a', () => {
    const slow = judgeRow('slow', strict, limits, measure([healthy('a')], { recoveryMs: 2_500 }));
    expect(slow.broken).toEqual(['recovery took 2500 ms after the fault ended (promise: 2000 ms)']);
    const never = judgeRow(
      'never',
      strict,
      limits,
      measure([healthy('a')], { recoveryMs: undefined }),
    );
    expect(never.broken).toEqual(['service never answered 2xx again after the fault ended']);
    const na = judgeRow('na', strict, limits, measure([healthy('a')], { recoveryMs: null }));
    expect(na.broken).toEqual([]);
  });

  it('flags RSS over the bound only where RSS is judged', () => {
    const m = measure([healthy('a')], { maxRssMiB: 700 });
    expect(judgeRow('mem', { ...strict, rssLimitMiB: 256 }, limits, m).broken).toEqual([
      'app RSS reached 700 MiB (bound: 256 MiB)',
    ]);
    expect(judgeRow('mem', strict, limits, m).broken).toEqual([]);
  });

  it('names the row in every broken line, and passes on what the scenario found', () => {
    const row = judgeRow('app SIGTERM', strict, limits, {
      ...measure([healthy('a')]),
      scenarioBroken: ['instance 0 exited 2 after SIGTERM (promise: 0)'],
    });
    expect(formatBroken([row])).toEqual([
      'BROKEN  app SIGTERM: instance 0 exited 2 after SIGTERM (promise: 0)',
    ]);
    expect(formatTable([row])).toMatch(/\| app SIGTERM .*\| FAIL +\|/);
  });
});

describe('judgeRow, a full store (review)', () => {
  it('a store that refuses every key as full from the start breaks the row', () => {
    // storeFullIsAnAnswer alone made this row pass: every key refused "full", nothing
    // completed, no promise left to break. The row must also see the store take keys.
    const fullKey = (id: string) => {
      const r = healthy(id);
      r.request.attempts = [
        { ...ok(), status: 503, problem: STORE_FULL_PROBLEM },
        { ...ok(), client: 1, status: 503, problem: STORE_FULL_PROBLEM },
      ];
      r.request.answers = [undefined, undefined];
      r.count = { completed: 0, answers: [] };
      return r;
    };
    const memory: RowPromises = {
      ...strict,
      recovery: false,
      storeFullIsAnAnswer: true,
      minCompleted: 2,
    };
    const none = judgeRow('memory', memory, limits, measure([fullKey('a'), fullKey('b')]));
    expect(none.neverCompleted).toBe(0);
    expect(none.broken).toEqual([
      'only 0 requests completed (promise: at least 2, what the store must take before it may be full)',
    ]);
    const some = judgeRow(
      'memory',
      memory,
      limits,
      measure([healthy('a'), healthy('b'), fullKey('c')]),
    );
    expect(some.broken).toEqual([]);
  });
});
