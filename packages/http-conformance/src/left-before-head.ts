import { constants as http2Constants } from 'node:http2';
import { connect } from 'node:net';
import type { IdempotencyStore } from '@idem/core';
import { afterAll, describe, expect, it } from 'vitest';
import { send } from './client.js';
import { REPLAYED } from './kit.js';
import { TENANT_HEADER } from './options.js';
import { h2Post, h2PostStream } from './raw-http.js';
import { memoryStores, redisStores, type StoreKind } from './stores.js';

/** See {@link leftBeforeHeadProbe}. */
export interface LeftBeforeHeadProbe {
  /** Counts one run of the route (every route of the probe calls it first); answers its number. */
  begin(): number;
  /**
   * Resolves when run `run` may go on: the first run of a check once the check lets it go, any
   * other (the second run a check must never see) at once.
   */
  held(run: number): Promise<void>;
  /** `begin()`, then `held()`: for a route that answers 201 with the JSON `{ run }` it resolves to. */
  work(): Promise<number>;
  /** How many times the route ran (every `begin()`). */
  runs(): number;
  /**
   * Sends a keyed `POST` of `{"a":1}` to `path` and leaves (closes the connection, or over
   * HTTP/2 resets the stream with CANCEL) once the route started, before any answer; retries
   * with the same key and body every half lease for five leases while the route still works,
   * each must get 409 with the route run once; then lets the route answer, and retries until
   * the answer is not 409: it must be the replay of the first run's 201 `{ run }`, run once.
   * The route: `await probe.work()`, then 201 `{ run }`.
   */
  check(url: string, path: string, options?: { http2?: boolean }): Promise<void>;
  /**
   * The same for a client that leaves once the head came, while the handler still works past
   * it (not a stuck body: for an adapter that has the handler's promise). The route: `const run
   * = probe.begin()`, a 200 `text/plain` head and `begun ${run}.` written, `await
   * probe.held(run)`, then the end `done`; the replay must be `begun 1.done`-like, run once.
   */
  checkAfterHead(url: string, path: string): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const BODY = '{"a":1}';
let counter = 0;

/**
 * A check that a client that leaves before the head while the route still works (its own
 * timeout during a slow call longer than the lease) never has its retry run the route beside
 * the first run: the handler has not answered, it is working, and its lease is renewed as for a
 * client that stays. Give the middleware under test `leaseMs` (a few hundred ms) and
 * `scope: 'global'`, make the route `await probe.work()` and answer 201 `{ run }`, then
 * `check(url, path)`.
 */
export function leftBeforeHeadProbe(leaseMs: number): LeftBeforeHeadProbe {
  let runs = 0;
  let first = 0;
  let gate: Promise<void> = Promise.resolve();
  const begin = () => {
    runs += 1;
    return runs;
  };
  const held = (run: number) => (run === first ? gate : Promise.resolve());

  /** Leaves with `leave` once the route started; retries; lets it go; answers the last retry. */
  async function scenario(
    leave: (key: string, started: () => boolean) => Promise<void>,
    retry: (key: string) => Promise<{ status: number; headers: object; body: string }>,
  ) {
    const key = `left-before-head-${process.pid}-${++counter}`;
    let release!: () => void;
    gate = new Promise((resolve) => {
      release = resolve;
    });
    const before = runs;
    first = runs + 1;
    const started = () => runs >= first;
    await leave(key, started);
    expect(started()).toBe(true);
    // Five leases: the old source let a retry take the key after at most two.
    const meanwhile: number[] = [];
    for (let i = 0; i < 10; i += 1) {
      await sleep(leaseMs / 2);
      meanwhile.push((await retry(key)).status);
    }
    expect(runs - before).toBe(1);
    expect(meanwhile).toEqual(meanwhile.map(() => 409));
    release();
    let last = await retry(key);
    for (let i = 0; i < 100 && last.status === 409; i += 1) {
      await sleep(20);
      last = await retry(key);
    }
    expect(runs - before).toBe(1);
    const replayed = (last.headers as Record<string, unknown>)[REPLAYED];
    return { status: last.status, replayed: String(replayed), body: last.body, run: first };
  }

  const h1Retry = (url: string, path: string) => async (key: string) => {
    const exchange = await send(url, path, { key, body: { a: 1 } });
    return { status: exchange.status, headers: exchange.headers, body: exchange.body.toString() };
  };

  return {
    begin,
    held,
    async work() {
      const run = begin();
      await held(run);
      return run;
    },
    runs: () => runs,
    async check(url, path, options = {}) {
      const last = options.http2
        ? await scenario(
            (key, started) => leaveH2(url, path, key, started),
            (key) => h2Post(url, path, key, { [TENANT_HEADER]: 'tenant-a' }),
          )
        : await scenario((key, started) => leave(url, path, key, started), h1Retry(url, path));
      expect([last.status, last.replayed, JSON.parse(last.body)]).toEqual([
        201,
        'true',
        { run: last.run },
      ]);
    },
    async checkAfterHead(url, path) {
      const last = await scenario((key) => leave(url, path, key, undefined), h1Retry(url, path));
      expect([last.status, last.replayed, last.body]).toEqual([
        200,
        'true',
        `begun ${last.run}.done`,
      ]);
    },
  };
}

/** What {@link describeLeftBeforeHead} starts: the app's URL and how to stop it. */
export interface LeftBeforeHeadApp {
  url: string;
  close(): Promise<unknown>;
}

/**
 * Registers {@link LeftBeforeHeadProbe.check} on each store kind (memory and Redis by
 * default), and over HTTP/2 (on a memory store) with `http2`. `start(probe, store, http2)`
 * starts the app under test on loopback: its middleware given `store`, `leaseMs` and
 * `scope: 'global'`, its `POST /jobs` route doing `await probe.work()` and answering 201 with
 * `{ run }`; served over h2c when `http2`.
 */
export function describeLeftBeforeHead(
  name: string,
  leaseMs: number,
  start: (
    probe: LeftBeforeHeadProbe,
    store: IdempotencyStore,
    http2: boolean,
  ) => Promise<LeftBeforeHeadApp>,
  options: { http2?: boolean; stores?: StoreKind[] } = {},
): void {
  describe(name, () => {
    const closers: (() => Promise<unknown>)[] = [];
    afterAll(async () => {
      for (const close of closers.reverse()) await close();
    });
    const run = async (store: IdempotencyStore, http2: boolean) => {
      const probe = leftBeforeHeadProbe(leaseMs);
      const app = await start(probe, store, http2);
      closers.push(() => app.close());
      await probe.check(app.url, '/jobs', { http2 });
    };
    for (const kind of options.stores ?? [memoryStores(), redisStores()]) {
      it(`${kind.name} store: retries past two leases get 409, then the replay; the route ran once`, async () => {
        const stores = await kind.setup();
        closers.push(stores.close);
        await run(stores.create(), false);
      });
    }
    if (options.http2)
      it('HTTP/2, a stream reset before the head: the same', async () => {
        const stores = await memoryStores().setup();
        await run(stores.create(), true);
      });
  });
}

/**
 * HTTP/1.1: the keyed POST on a connection of its own, closed once the route started
 * (`started`), or once the head came (`started` undefined).
 */
async function leave(url: string, path: string, key: string, started?: () => boolean) {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.on('error', () => {});
  const head = new Promise<string>((resolve) =>
    socket.once('data', (data: Buffer) => resolve(data.toString('latin1'))),
  );
  socket.write(
    `POST ${path} HTTP/1.1\r\nHost: ${hostname}\r\nIdempotency-Key: ${key}\r\n` +
      `${TENANT_HEADER}: tenant-a\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${BODY.length}\r\n\r\n${BODY}`,
  );
  if (started) for (let i = 0; i < 500 && !started(); i += 1) await sleep(10);
  else expect(await head).toMatch(/^HTTP\/1\.1 200 /);
  socket.destroy();
}

/** HTTP/2 (h2c): the keyed POST as a stream, reset (CANCEL) once the route started. */
async function leaveH2(url: string, path: string, key: string, started: () => boolean) {
  const { session, stream } = h2PostStream(url, path, key, { [TENANT_HEADER]: 'tenant-a' });
  stream.end(BODY);
  for (let i = 0; i < 500 && !started(); i += 1) await sleep(10);
  stream.close(http2Constants.NGHTTP2_CANCEL);
  session.close();
}

/**
 * A keyed `POST` of `{"a":1}` to `path` on a connection of its own (over HTTP/1.1, tenant
 * `tenant-a`); answers the status of its head and leaves once it came.
 */
async function postHeadAndLeave(url: string, path: string, key: string): Promise<number> {
  const socket = connect(Number(new URL(url).port), new URL(url).hostname);
  socket.on('error', () => {});
  const head = new Promise<string>((resolve) =>
    socket.once('data', (data: Buffer) => resolve(data.toString('latin1'))),
  );
  socket.write(
    `POST ${path} HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\n` +
      `${TENANT_HEADER}: tenant-a\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${BODY.length}\r\n\r\n${BODY}`,
  );
  const status = Number((await head).slice(9, 12));
  socket.destroy();
  return status;
}

/**
 * For a route whose run (counted by `runs`) answers a 200 head and a first chunk of a stream
 * that then stays silent, never ending: a keyed `POST` that leaves once the head came (it
 * must be 200), then its retries, every half lease while the route ran once (24 at most,
 * twelve leases): answers their statuses. A silent body whose client left frees its key
 * within two leases: the last must be 200, the route run twice (give the middleware a
 * `maxHoldMs` well past twelve leases).
 */
export async function silentAfterLeaving(
  url: string,
  path: string,
  key: string,
  leaseMs: number,
  runs: () => number,
): Promise<number[]> {
  expect(await postHeadAndLeave(url, path, key)).toBe(200);
  const statuses: number[] = [];
  for (let i = 0; i < 24 && runs() === 1; i += 1) {
    await sleep(leaseMs / 2);
    statuses.push(await postHeadAndLeave(url, path, key));
  }
  return statuses;
}
