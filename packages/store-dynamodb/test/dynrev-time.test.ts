/**
 * dynrev adversarial review: bounded time. A store on recommendedDynamoDbClientConfig
 * (500 ms per attempt, 2 attempts) talks to DynamoDB Local through a loopback endpoint that
 * goes silent, half-open, stalls after the headers, or trickles: every call must settle
 * within maxAttempts x requestTimeoutMs plus slack with a typed error, and the store must
 * work again by itself once the endpoint answers.
 */
import { randomBytes } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createIdempotency, StoreUnavailableError } from '@idem/core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDynamoDbStore, recommendedDynamoDbClientConfig } from '../src/index.js';
import { type FaultProxy, startFaultProxy, within } from './dynrev-proxy.js';

const endpoint = inject('dynamodbEndpoint');
const tables = inject('dynamodbTables');
const REQUEST_TIMEOUT = 500;
const ATTEMPTS = 2;
// The documented bound (maxAttempts x requestTimeoutMs) plus the SDK's backoff and a loaded machine.
const BOUND = ATTEMPTS * REQUEST_TIMEOUT + 1_500;
const HOUR = 3_600_000;

let proxy: FaultProxy;
const clients: DynamoDBClient[] = [];
beforeAll(async () => {
  proxy = await startFaultProxy(Number(new URL(endpoint).port));
});
afterAll(async () => {
  for (const client of clients) client.destroy();
  await proxy?.close();
});

function boundedStore(requestDeadlineMs?: number) {
  const client = new DynamoDBClient({
    endpoint: proxy.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
    ...recommendedDynamoDbClientConfig({
      requestTimeoutMs: REQUEST_TIMEOUT,
      connectionTimeoutMs: 500,
      maxAttempts: ATTEMPTS,
    }),
  });
  clients.push(client);
  const store = createDynamoDbStore({
    client,
    tableName: tables.simple,
    keyPrefix: `dynrev-time:${randomBytes(4).toString('hex')}:`,
    ...(requestDeadlineMs === undefined ? {} : { requestDeadlineMs }),
  });
  return { client, store };
}

const newKey = () => randomBytes(16).toString('hex');
const input = (key = newKey()) => ({
  key,
  owner: randomBytes(12).toString('base64url'),
  fingerprint: 'fp',
  leaseMs: 30_000,
  retentionMs: HOUR,
});

/** Every store call, given a key this store acquired while the endpoint was healthy. */
function everyCall(
  store: ReturnType<typeof boundedStore>['store'],
  held: ReturnType<typeof input>,
) {
  return {
    acquire: () => store.acquire(input()),
    get: () => store.get(held.key),
    extend: () => store.extend({ ...held, leaseMs: 30_000 }),
    complete: () => store.complete({ ...held, outcome: new Uint8Array([1, 2, 3]) }),
    release: () => store.release(held),
  };
}

async function expectBoundedFailures(calls: Record<string, () => Promise<unknown>>) {
  for (const [name, call] of Object.entries(calls)) {
    const result = await within(call(), BOUND + 5_000);
    expect(result.settled, `${name} still pending after ${Math.round(result.ms)} ms`).toBe(true);
    if (!result.settled) continue;
    expect(result.ok, `${name} succeeded against a faulty endpoint`).toBe(false);
    if (!result.ok) expect(result.error, name).toBeInstanceOf(StoreUnavailableError);
    expect(result.ms, `${name} outlived its bound`).toBeLessThan(BOUND);
  }
}

async function expectRecovery(store: ReturnType<typeof boundedStore>['store']) {
  const started = performance.now();
  for (;;) {
    const result = await within(store.acquire(input()), BOUND + 2_000);
    if (result.settled && result.ok) break;
    expect(performance.now() - started, 'no recovery within 5 s').toBeLessThan(5_000);
  }
  const held = input();
  expect(await store.acquire(held)).toMatchObject({ kind: 'acquired', fence: 1 });
  expect(await store.complete({ ...held, outcome: new Uint8Array([7]) })).toEqual({ ok: true });
}

describe('dynrev: bounded time against a faulty endpoint', () => {
  it('a silent endpoint (accepts, never answers): every call fails typed within its bound, then service resumes by itself', async () => {
    const { store } = boundedStore();
    const held = input();
    expect(await store.acquire(held)).toMatchObject({ kind: 'acquired' });
    proxy.mode = 'silent';
    proxy.dropAll();
    try {
      await expectBoundedFailures(everyCall(store, held));
    } finally {
      proxy.mode = 'forward';
    }
    await expectRecovery(store);
    // The lease held through the outage still completes: nothing was half-written.
    expect(await store.complete({ ...held, outcome: new Uint8Array([9]) })).toEqual({ ok: true });
  });

  it('a half-open connection (pooled keep-alive socket whose peer went away without FIN): calls fail within the bound and the store recovers', async () => {
    const { store } = boundedStore();
    const held = input();
    // Healthy first: the client keeps a pooled connection through the proxy.
    expect(await store.acquire(held)).toMatchObject({ kind: 'acquired' });
    expect(await store.get(held.key)).toMatchObject({ status: 'in_progress' });
    proxy.blackhole = true;
    proxy.mode = 'silent';
    try {
      await expectBoundedFailures(everyCall(store, held));
    } finally {
      proxy.blackhole = false;
      proxy.mode = 'forward';
    }
    await expectRecovery(store);
  });

  it('an endpoint that sends the response headers and then goes silent: calls fail within the bound (socket idle timeout)', async () => {
    const { store } = boundedStore();
    const held = input();
    expect(await store.acquire(held)).toMatchObject({ kind: 'acquired' });
    proxy.mode = 'stall-after-headers';
    proxy.dropAll();
    try {
      await expectBoundedFailures({
        acquire: () => store.acquire(input()),
        complete: () => store.complete({ ...held, outcome: new Uint8Array([1]) }),
      });
    } finally {
      proxy.mode = 'forward';
    }
    await expectRecovery(store);
  });

  // FINDING (LOW; fixed: every request carries an AbortSignal past the store's
  // requestDeadlineMs, default 5 s): a slow endpoint that trickles the response body (headers
  // at once, then one byte every 200 ms, below the 500 ms idle timeout) kept a store call
  // pending far past the bound the README documents for recommendedDynamoDbClientConfig: the
  // SDK's requestTimeout is cleared once the headers arrive, and socketTimeout is an idle
  // timeout, so nothing bounded the body. Through @idem/core the caller was cut by
  // storeTimeoutMs, but the request (and its socket) lived on.
  for (const [label, deadline, bound] of [
    ['requestDeadlineMs at maxAttempts x requestTimeoutMs', ATTEMPTS * REQUEST_TIMEOUT, BOUND],
    ['the default requestDeadlineMs (5 s)', undefined, 5_000 + 1_500],
  ] as const) {
    it(`a trickling endpoint: a store call settles within ${label}, fails typed and the store recovers`, async () => {
      const { store } = boundedStore(deadline);
      proxy.mode = 'trickle';
      proxy.trickleMs = 200;
      proxy.dropAll();
      try {
        const result = await within(store.acquire(input()), bound + 4_500);
        expect(result.settled, `acquire still pending after ${Math.round(result.ms)} ms`).toBe(
          true,
        );
        expect(result.settled && !result.ok && result.error).toBeInstanceOf(StoreUnavailableError);
        expect(result.ms).toBeLessThan(bound);
      } finally {
        proxy.mode = 'forward';
        proxy.dropAll();
      }
      await expectRecovery(store);
    });
  }

  it('through @idem/core with a client that has NO timeouts: core bounds the store call (storeTimeoutMs) and recovers', async () => {
    // A plain DynamoDBClient (no requestTimeout): the store itself would wait forever on a
    // silent endpoint; core's storeTimeoutMs is what bounds the caller.
    const client = new DynamoDBClient({
      endpoint: proxy.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
      maxAttempts: 1,
    });
    clients.push(client);
    const store = createDynamoDbStore({
      client,
      tableName: tables.simple,
      keyPrefix: `dynrev-core:${randomBytes(4).toString('hex')}:`,
    });
    const idem = createIdempotency<string>({ store, storeTimeoutMs: 1_000 });
    let runs = 0;
    const op = async () => {
      runs++;
      return 'done';
    };
    proxy.mode = 'silent';
    proxy.dropAll();
    try {
      const result = await within(idem.execute({ key: 'k-1', scope: 't' }, op), 6_000);
      expect(result.settled).toBe(true);
      if (result.settled) {
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.error).toBeInstanceOf(StoreUnavailableError);
        expect(result.ms).toBeLessThan(1_000 + 1_500);
      }
      expect(runs).toBe(0);
    } finally {
      proxy.mode = 'forward';
      proxy.dropAll();
    }
    const first = await idem.execute({ key: 'k-2', scope: 't' }, op);
    const again = await idem.execute({ key: 'k-2', scope: 't' }, op);
    expect(first).toEqual({ value: 'done', replayed: false });
    expect(again).toEqual({ value: 'done', replayed: true });
    expect(runs).toBe(1);
  });
});
