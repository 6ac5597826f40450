import { afterAll, describe, expect, it } from 'vitest';
import { send } from './client.js';
import { PROBLEM, REPLAYED } from './kit.js';

/**
 * See {@link outerTimeoutProbe}. The route under test: `const run = await probe.work()`, then
 * 201 with the JSON `{ run }`; a request-timeout mechanism mounted OUTSIDE the idempotency
 * middleware answers the request (503, 504, 408...) before the route's work ends.
 */
export interface OuterTimeoutProbe {
  /**
   * Counts one run of the route; resolves when it may answer (the first run of a check once
   * the check lets it go, any other at once) to its number.
   */
  work(): Promise<number>;
  /**
   * As {@link work}, but the first run of a {@link checkThrown} rejects once let go (the route
   * throws after the outer timeout answered); any other run resolves to its number.
   */
  workOrThrow(): Promise<number>;
  /** How many times the route ran. */
  runs(): number;
  /**
   * Sends a keyed `POST` of `{"a":1}` to `path`, which the outer timeout must answer with
   * `timeoutStatus` while the route still works; retries with the same key every half lease
   * for three leases: each must get 409, the route run once. Then lets the route answer and
   * retries until the answer is not 409. With `replay` (the adapter knows the route's own
   * result) it must be the replay of the first run's 201 `{ run }`; without, the route ran to
   * its end but its result reached no response: the answer must be the 500
   * `outcome-not-recorded` problem (the `answered_outside` marker), or with `afterwards:
   * 'released'` (an adapter that releases the key then, a known gap) a 201 of a later run,
   * which never ran beside the first. The route runs once but in that last case. Answers the
   * last retry.
   */
  check(
    url: string,
    path: string,
    timeoutStatus: number,
    replay: boolean,
    afterwards?: 'marked' | 'released',
  ): Promise<{ status: number; replayed: unknown; body: string }>;
  /**
   * As {@link check} for a route doing `await probe.workOrThrow()` (it throws once let go):
   * retries get 409 while it runs; once it threw the key is released (a failure may be
   * retried), so the next retry runs the route again: a 201 `{ run }` of the second run.
   */
  checkThrown(url: string, path: string, timeoutStatus: number): Promise<void>;
  /**
   * For a route that answers `status` (not final) itself, with no timeout involved: two keyed
   * `POST`s with one key must both get it, not replayed (the key released at once, never held
   * for the second: a 409 would say it was).
   */
  checkOwnAnswer(url: string, path: string, status: number): Promise<void>;
}

interface Answer {
  status: number;
  replayed: unknown;
  body: string;
  /** The problem's `type`, for a problem. */
  type: unknown;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let counter = 0;

/**
 * A check that a timeout answered OUTSIDE the middleware while the route still works (the 503
 * of `connect-timeout`, `hono/timeout`, a hook that replies first) never frees the key under
 * the running route: a retry sent after the timeout's answer must get 409, not run the route
 * beside the first. Give the middleware under test `leaseMs` (a few hundred ms).
 */
export function outerTimeoutProbe(leaseMs: number): OuterTimeoutProbe {
  let runs = 0;
  let active = 0;
  let overlapped = false;
  let first = 0;
  let throwing = 0;
  let gate: Promise<void> = Promise.resolve();
  const work = async () => {
    runs += 1;
    const run = runs;
    active += 1;
    overlapped ||= active > 1;
    try {
      if (run === first) await gate;
    } finally {
      active -= 1;
    }
    return run;
  };
  // The first request of a check, answered by the outer timeout while the route waits for the
  // check to let it go; then retries every half lease for three leases, each must get 409.
  const timedOut = async (
    url: string,
    path: string,
    timeoutStatus: number,
  ): Promise<{ before: number; release: () => void; post: () => Promise<Answer> }> => {
    const key = `outer-timeout-${process.pid}-${++counter}`;
    let release!: () => void;
    gate = new Promise((resolve) => {
      release = resolve;
    });
    const before = runs;
    first = runs + 1;
    const post = async () => {
      const exchange = await send(url, path, { key, body: { a: 1 } });
      const replayed = exchange.headers[REPLAYED];
      const type = String(exchange.headers['content-type']).startsWith('application/problem+json')
        ? (JSON.parse(exchange.body.toString()) as { type?: unknown }).type
        : undefined;
      return { status: exchange.status, replayed, body: exchange.body.toString(), type };
    };
    expect((await post()).status).toBe(timeoutStatus);
    expect(runs - before).toBe(1);
    // Three leases: the old source let the first retry run the route again at once.
    const meanwhile: number[] = [];
    for (let i = 0; i < 6; i += 1) {
      meanwhile.push((await post()).status);
      await sleep(leaseMs / 2);
    }
    expect(runs - before).toBe(1);
    expect(meanwhile).toEqual(meanwhile.map(() => 409));
    return { before, release, post };
  };
  const settled = async (post: () => Promise<Answer>): Promise<Answer> => {
    let last = await post();
    for (let i = 0; i < 100 && last.status === 409; i += 1) {
      await sleep(20);
      last = await post();
    }
    expect(overlapped).toBe(false);
    return last;
  };
  return {
    work,
    async workOrThrow() {
      const run = await work();
      if (run === throwing) throw new Error('the route failed after the outer timeout answered');
      return run;
    },
    runs: () => runs,
    async check(url, path, timeoutStatus, replay, afterwards = 'marked') {
      const { before, release, post } = await timedOut(url, path, timeoutStatus);
      release();
      const last = await settled(post);
      if (replay) {
        expect([last.status, last.replayed, last.body]).toEqual([
          201,
          'true',
          JSON.stringify({ run: first }),
        ]);
        expect(runs - before).toBe(1);
      } else if (afterwards === 'marked') {
        // The route ran to its end: never run again, its outcome unknown (answered_outside).
        expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
        expect(runs - before).toBe(1);
      } else {
        expect(last.status).toBe(201);
        expect(JSON.parse(last.body)).toEqual({ run: first + 1 });
      }
      return { status: last.status, replayed: last.replayed, body: last.body };
    },
    async checkThrown(url, path, timeoutStatus) {
      const { before, release, post } = await timedOut(url, path, timeoutStatus);
      throwing = first;
      release();
      const last = await settled(post);
      // The first run threw: released, the retry ran the route a second time (after it).
      expect([last.status, last.body]).toEqual([201, JSON.stringify({ run: first + 1 })]);
      expect(runs - before).toBe(2);
    },
    async checkOwnAnswer(url, path, status) {
      const key = `outer-timeout-own-${process.pid}-${++counter}`;
      for (let i = 0; i < 2; i += 1) {
        const answer = await send(url, path, { key, body: { a: 1 } });
        expect([answer.status, answer.headers[REPLAYED]]).toEqual([status, undefined]);
      }
    },
  };
}

/** What {@link describeOuterTimeout} starts: the app's URL and how to stop it. */
export interface OuterTimeoutApp {
  url: string;
  close(): Promise<unknown>;
}

/**
 * Registers {@link OuterTimeoutProbe.check} (`POST /charges`, answered `timeoutStatus` by the
 * outer timeout), {@link OuterTimeoutProbe.checkThrown} (`POST /fails`, likewise, its route
 * throwing once let go) and {@link OuterTimeoutProbe.checkOwnAnswer} (`POST /own`, whose route
 * answers 503 itself at once). `start(probe)` starts the app under test on loopback: its
 * timeout mounted outside the middleware, the middleware given `leaseMs`, `POST /charges`
 * doing `await probe.work()` and answering 201 `{ run }`, `POST /fails` the same with
 * `await probe.workOrThrow()`. `afterwards`: see {@link OuterTimeoutProbe.check} (default
 * `'marked'`).
 */
export function describeOuterTimeout(
  name: string,
  leaseMs: number,
  start: (probe: OuterTimeoutProbe) => Promise<OuterTimeoutApp>,
  options: { timeoutStatus: number; replay: boolean; afterwards?: 'marked' | 'released' },
): void {
  describe(name, () => {
    const closers: (() => Promise<unknown>)[] = [];
    afterAll(async () => {
      for (const close of closers.reverse()) await close();
    });
    const started = async (probe: OuterTimeoutProbe) => {
      const app = await start(probe);
      closers.push(() => app.close());
      return app.url;
    };
    it(`retries after the ${options.timeoutStatus} get 409 while the route runs; it never runs twice at once`, async () => {
      const probe = outerTimeoutProbe(leaseMs);
      await probe.check(
        await started(probe),
        '/charges',
        options.timeoutStatus,
        options.replay,
        options.afterwards,
      );
    });
    it(`a route that throws after the ${options.timeoutStatus} still frees the key once it threw: a retry runs it`, async () => {
      const probe = outerTimeoutProbe(leaseMs);
      await probe.checkThrown(await started(probe), '/fails', options.timeoutStatus);
    });
    it("the route's own 503 (no timeout) still releases the key at once", async () => {
      const probe = outerTimeoutProbe(leaseMs);
      await probe.checkOwnAnswer(await started(probe), '/own', 503);
    });
  });
}
