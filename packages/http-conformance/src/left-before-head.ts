import { connect as http2Connect, constants as http2Constants } from 'node:http2';
import { connect } from 'node:net';
import { expect } from 'vitest';
import { send } from './client.js';
import { REPLAYED } from './kit.js';
import { TENANT_HEADER } from './options.js';
import { h2Post } from './raw-http.js';

/** See {@link leftBeforeHeadProbe}. */
export interface LeftBeforeHeadProbe {
  /**
   * The route awaits it first thing, then answers 201 with the JSON `{ run }` it resolves to
   * (the route's run count for the probe's key, from 1). The first run of a `check` waits until
   * the check lets it go; any other run (the second run the check must never see) goes on at
   * once.
   */
  work(): Promise<number>;
  /** How many times the route ran (every `work()` call). */
  runs(): number;
  /**
   * Sends a keyed `POST` of `{"a":1}` to `path` and leaves (closes the connection, or over
   * HTTP/2 resets the stream with CANCEL) once the route started, before any answer; retries
   * with the same key and body every half lease for five leases while the route still works,
   * each must get 409 with the route run once; then lets the route answer, and retries until
   * the answer is not 409: it must be the replay of the first run's 201, still run once.
   */
  check(url: string, path: string, options?: { http2?: boolean }): Promise<void>;
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
  return {
    async work() {
      runs += 1;
      const run = runs;
      if (run === first) await gate;
      return run;
    },
    runs: () => runs,
    async check(url, path, options = {}) {
      const key = `left-before-head-${process.pid}-${++counter}`;
      let release!: () => void;
      gate = new Promise((resolve) => {
        release = resolve;
      });
      const before = runs;
      first = runs + 1;
      const started = () => runs >= first;
      await (options.http2 ? leaveH2 : leave)(url, path, key, started);
      expect(started()).toBe(true);
      const retry = async () =>
        options.http2
          ? await h2Post(url, path, key, { [TENANT_HEADER]: 'tenant-a' })
          : await send(url, path, { key, body: { a: 1 } }).then((exchange) => ({
              status: exchange.status,
              headers: exchange.headers,
              body: exchange.body.toString(),
            }));
      // Five leases: the old source let a retry take the key after at most two.
      const meanwhile: number[] = [];
      for (let i = 0; i < 10; i += 1) {
        await sleep(leaseMs / 2);
        meanwhile.push((await retry()).status);
      }
      expect(runs - before).toBe(1);
      expect(meanwhile).toEqual(meanwhile.map(() => 409));
      release();
      let last = await retry();
      for (let i = 0; i < 100 && last.status === 409; i += 1) {
        await sleep(20);
        last = await retry();
      }
      expect(last.status).toBe(201);
      expect(String(last.headers[REPLAYED])).toBe('true');
      expect(JSON.parse(last.body)).toEqual({ run: first });
      expect(runs - before).toBe(1);
    },
  };
}

/** HTTP/1.1: the keyed POST on a connection of its own, closed once the route started. */
async function leave(url: string, path: string, key: string, started: () => boolean) {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.on('error', () => {});
  socket.write(
    `POST ${path} HTTP/1.1\r\nHost: ${hostname}\r\nIdempotency-Key: ${key}\r\n` +
      `${TENANT_HEADER}: tenant-a\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${BODY.length}\r\n\r\n${BODY}`,
  );
  for (let i = 0; i < 500 && !started(); i += 1) await sleep(10);
  socket.destroy();
}

/** HTTP/2 (h2c): the keyed POST as a stream, reset (CANCEL) once the route started. */
async function leaveH2(url: string, path: string, key: string, started: () => boolean) {
  const session = http2Connect(url);
  session.on('error', () => {});
  const stream = session.request({
    ':method': 'POST',
    ':path': path,
    'idempotency-key': key,
    'content-type': 'application/json',
    [TENANT_HEADER]: 'tenant-a',
  });
  stream.on('error', () => {});
  stream.end(BODY);
  for (let i = 0; i < 500 && !started(); i += 1) await sleep(10);
  stream.close(http2Constants.NGHTTP2_CANCEL);
  session.close();
}
