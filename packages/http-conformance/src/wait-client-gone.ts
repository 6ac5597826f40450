import { connect, type Socket } from 'node:net';
import type { IdempotencyStore } from '@idem/core';
import { afterAll, describe, expect, it } from 'vitest';
import { REPLAYED } from './kit.js';
import { memoryStores, redisStores, type StoreKind, spyStore } from './stores.js';

/** The route of a {@link describeWaitClientGone} app: `await probe.work()`, then 201 `{ run }`. */
export interface WaitClientGoneProbe {
  /** Counts one run and resolves (to its number) once the check lets the first run answer. */
  work(): Promise<number>;
}

/** An app under {@link describeWaitClientGone}, listening on loopback. */
export interface WaitClientGoneApp {
  url: string;
  /** Closes the server, its open connections included (a waiting request must not hold it). */
  close(): Promise<unknown>;
}

/** The `wait` the middleware under test is given: long, so that only a client's leaving ends it. */
export const WAIT_CLIENT_GONE_WAIT = { timeoutMs: 20_000, pollMs: 20 } as const;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const request = (key: string) =>
  `POST /charges HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`;

function open(url: string, data: string): Socket {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.on('error', () => {});
  socket.write(data);
  return socket;
}

/** Polls `done` every 10 ms, at most `tries` times. */
async function until(done: () => boolean, tries = 300) {
  for (let i = 0; i < tries && !done(); i++) await sleep(10);
}

/**
 * A check that under `wait`, a duplicate whose client leaves while it waits for the first
 * request stops waiting at once (the README's promise: the request's signal ends the wait),
 * rather than polling the store up to `wait.timeoutMs` for nobody: after the client closed
 * its connection, the store sees no more acquisitions. Then a duplicate whose client stays
 * still gets the replay, the route run once. With `pipelined`, the same for a duplicate
 * pipelined behind another request of its connection (Node never closes its queued response).
 * `start(probe, store)` starts the app: its middleware given `store`, `scope: 'global'` and
 * `wait: WAIT_CLIENT_GONE_WAIT`, its `POST /charges` doing `await probe.work()` and answering
 * 201 `{ run }`.
 */
export function describeWaitClientGone(
  name: string,
  start: (probe: WaitClientGoneProbe, store: IdempotencyStore) => Promise<WaitClientGoneApp>,
  options: { pipelined?: boolean; stores?: StoreKind[] } = {},
): void {
  describe(name, () => {
    const closers: (() => Promise<unknown>)[] = [];
    afterAll(async () => {
      for (const close of closers.reverse()) await close();
    });
    /** Drops `socket` once the store saw `polls` more acquisitions; none may come after. */
    const leaveWhilePolled = async (socket: Socket, calls: { acquire: number }, polls: number) => {
      const before = calls.acquire;
      await until(() => calls.acquire >= before + polls);
      expect(calls.acquire, 'the duplicate waits (polls the store)').toBeGreaterThanOrEqual(
        before + polls,
      );
      const gone = new Promise((resolve) => socket.once('close', resolve));
      socket.destroy();
      await gone;
      // One poll may have been under way as it left; none after. (A live wait polls at least
      // every second: 20, 30, 45 ... 1000 ms.)
      await sleep(300);
      const atLeave = calls.acquire;
      await sleep(1_500);
      expect(calls.acquire - atLeave, 'acquisitions after the client left').toBe(0);
    };
    for (const kind of options.stores ?? [memoryStores(), redisStores()]) {
      it(`${kind.name} store: a client that leaves during the wait ends it at once`, async () => {
        const stores = await kind.setup();
        closers.push(stores.close);
        const spied = spyStore(stores.create());
        let runs = 0;
        let release!: () => void;
        const held = new Promise<void>((resolve) => {
          release = resolve;
        });
        const probe: WaitClientGoneProbe = {
          work: async () => {
            const run = ++runs;
            await held;
            return run;
          },
        };
        const app = await start(probe, spied.store);
        closers.push(() => app.close());
        const key = `wait-gone-${Math.random().toString(36).slice(2)}`;
        const first = open(app.url, request(key));
        await until(() => runs === 1);
        expect(runs).toBe(1);
        await leaveWhilePolled(open(app.url, request(key)), spied.calls, 3);
        if (options.pipelined) {
          // One connection: another key runs (held), and the duplicate waits queued behind it.
          const other = `${key}-other`;
          const both = open(app.url, request(other) + request(key));
          await until(() => runs === 2);
          expect(runs).toBe(2);
          await leaveWhilePolled(both, spied.calls, 3);
        }
        release();
        // A duplicate whose client stays still waits, and gets the first one's replay.
        const third = await fetch(`${app.url}/charges`, {
          method: 'POST',
          headers: { 'idempotency-key': key, 'content-type': 'application/json' },
          body: '{}',
        });
        expect(third.status).toBe(201);
        expect(third.headers.get(REPLAYED)).toBe('true');
        expect(await third.json()).toEqual({ run: 1 });
        first.destroy();
      }, 20_000);
    }
  });
}
