/**
 * ensrev: attacks on 81b5f991 (ensureTable() retries transient failures until timeoutMs).
 * - Bounded time: answers that each come just within requestDeadlineMs, one request after
 *   another, held the call for five request deadlines whatever timeoutMs said (README: "settles
 *   within timeoutMs + requestDeadlineMs"); a credentials provider that never answers held it
 *   for ever (the abort signal ends the HTTP exchange, not the wait for credentials).
 * - Wrong results under concurrency: two callers that both found TTL off both sent
 *   UpdateTimeToLive, and DynamoDB refuses the second ("ValidationException: TimeToLive is
 *   already enabled"): a caller failed on a table that ended ready. A table that went away
 *   while the call waited for it (it was being deleted) was waited for until timeoutMs,
 *   never created again.
 * - Transient failures failed at once: ENETDOWN, a 429 from a proxy on the way, a fetch
 *   handler's `TypeError: fetch failed` over a reset connection. Refusals (access,
 *   credentials, a bad client) still fail at once, TTL in the wrong state stays
 *   InvalidInputError.
 * Each test runs the HTTP proxy of test/operation-fault-proxy.ts in front of DynamoDB Local.
 */
import {
  DeleteTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { InvalidInputError, StoreUnavailableError } from '@idem/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createDynamoDbStore, type DynamoDbStoreOptions } from '../src/index.js';
import { makeClient } from './dynamodb-env.js';
import { within } from './dynrev-proxy.js';
import {
  type Fault,
  type OperationFaultProxy,
  startOperationFaultProxy,
} from './operation-fault-proxy.js';
import { clients, endpoint, newKey } from './store-fixture.js';

const proxies = new Set<OperationFaultProxy>();
const tablesMade = new Set<string>();
afterEach(async () => {
  for (const proxy of proxies) await proxy.close();
  proxies.clear();
  const direct = makeClient(endpoint);
  clients.add(direct);
  for (const name of tablesMade)
    await direct.send(new DeleteTableCommand({ TableName: name })).catch(() => {});
  tablesMade.clear();
});

/** The stores' requestDeadlineMs, unless a test sets its own: room for a loaded CI host. */
const DEADLINE_MS = 2_000;

/** A proxy and a new table name (deleted after the test). */
async function setup() {
  const proxy = await startOperationFaultProxy(endpoint);
  proxies.add(proxy);
  const tableName = `ensrev-${newKey().slice(0, 12)}`;
  tablesMade.add(tableName);
  /** A store on its own client through the proxy; the SDK retries nothing itself. */
  const store = (options: Partial<DynamoDbStoreOptions> = {}, client = proxied()) =>
    createDynamoDbStore({ client, tableName, requestDeadlineMs: DEADLINE_MS, ...options });
  const proxied = () => {
    const client = makeClient(proxy.endpoint, { maxAttempts: 1 });
    clients.add(client);
    return client;
  };
  const direct = makeClient(endpoint);
  clients.add(direct);
  return { proxy, tableName, store, proxied, direct };
}

/** A client through `endpoint` whose requests of `operation` throw `error` the first `times`. */
function failingClient(target: string, operation: string, error: () => unknown, times = 1) {
  const client = makeClient(target, { maxAttempts: 1 });
  clients.add(client);
  let left = times;
  let thrown = 0;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName === `${operation}Command` && left > 0) {
        left--;
        thrown++;
        throw error();
      }
      return next(args);
    },
    { step: 'finalizeRequest', name: 'ensrevFail' },
  );
  return { client, thrown: () => thrown };
}

const repeat = (fault: Fault, n: number): Fault[] => Array.from({ length: n }, () => fault);

describe('ensrev: ensureTable settles within timeoutMs + requestDeadlineMs', () => {
  it.each([0, 1_000])(
    'answers that each come just within the request deadline (timeoutMs %i)',
    async (timeoutMs) => {
      const t = await setup();
      const requestDeadlineMs = 1_500;
      for (const op of ['DescribeTable', 'CreateTable', 'DescribeTimeToLive', 'UpdateTimeToLive'])
        t.proxy.faults.set(op, repeat({ delayMs: 1_200 }, 20));
      const run = await within(
        t.store({ requestDeadlineMs }).ensureTable({ timeoutMs, pollMs: 20 }),
        30_000,
      );
      expect(run.settled).toBe(true);
      if (run.settled && !run.ok) expect(run.error).toBeInstanceOf(StoreUnavailableError);
      // Generous slack for a loaded host; the old code took five answers of 1.2 s each (6 s).
      expect(run.ms).toBeLessThan(timeoutMs + requestDeadlineMs + 2_000);
    },
  );

  it('a credentials provider that never answers: the call still ends, typed', async () => {
    const t = await setup();
    const client = new DynamoDBClient({
      endpoint: t.proxy.endpoint,
      region: 'us-east-1',
      credentials: () => new Promise(() => {}),
      maxAttempts: 1,
    });
    clients.add(client as ReturnType<typeof makeClient>);
    const run = await within(
      t.store({ requestDeadlineMs: 300 }, client).ensureTable({ timeoutMs: 500, pollMs: 50 }),
      10_000,
    );
    expect(run.settled).toBe(true);
    if (run.settled) {
      expect(run.ok).toBe(false);
      if (!run.ok) expect(run.error).toBeInstanceOf(StoreUnavailableError);
      expect(run.ms).toBeLessThan(500 + 300 + 3_000);
    }
    expect(t.proxy.seen).toEqual([]);
  });

  it('pollMs far above timeoutMs: the wait is cut at timeoutMs', async () => {
    const t = await setup();
    t.proxy.faults.set('DescribeTable', repeat('silent', 20));
    const run = await within(
      t.store().ensureTable({ timeoutMs: 300, pollMs: 2 ** 31 - 1 }),
      20_000,
    );
    expect(run.settled && !run.ok && run.error).toBeInstanceOf(StoreUnavailableError);
    expect(run.ms).toBeLessThan(300 + DEADLINE_MS + 3_000);
  });
  it('a table stuck in CREATING: StoreUnavailableError once timeoutMs has passed', async () => {
    const t = await setup();
    const creating = {
      answer: { Table: { TableName: t.tableName, TableStatus: 'CREATING' } },
    } satisfies Fault;
    t.proxy.faults.set('DescribeTable', repeat(creating, 1_000));
    const run = await within(t.store().ensureTable({ timeoutMs: 500, pollMs: 20 }), 20_000);
    expect(run.settled && !run.ok && run.error).toBeInstanceOf(StoreUnavailableError);
    expect(run.ms).toBeLessThan(500 + DEADLINE_MS + 3_000);
    expect(t.proxy.seen).not.toContain('CreateTable');
  });

  it('timeoutMs and pollMs at their largest: a failure is sent again, the table is made', async () => {
    const t = await setup();
    t.proxy.faults.set('DescribeTable', ['500']);
    // pollMs is the wait between tries: 1 ms here, the longest timeoutMs beside it.
    const result = await t.store().ensureTable({ timeoutMs: Number.MAX_SAFE_INTEGER, pollMs: 1 });
    expect(result).toEqual({ created: true, ttlEnabled: true });
    await expect(
      t.store().ensureTable({ timeoutMs: Number.MAX_SAFE_INTEGER, pollMs: 2 ** 31 - 1 }),
    ).resolves.toEqual({ created: false, ttlEnabled: false });
  });
});

describe('ensrev: ensureTable under concurrency and table states', () => {
  // Another caller turned TTL on between this caller's DescribeTimeToLive (answered
  // DISABLED here, as it was when it looked) and its UpdateTimeToLive. (Not two callers at
  // once on DynamoDB Local: it lets two concurrent UpdateTimeToLive both pass.)
  const lookedBefore = {
    answer: { TimeToLiveDescription: { TimeToLiveStatus: 'DISABLED' } },
  } satisfies Fault;

  it('TTL turned on by another caller since this one looked: the refusal looks again, no error', async () => {
    const t = await setup();
    expect(await t.store().ensureTable({ timeoutMs: 20_000, pollMs: 20 })).toEqual({
      created: true,
      ttlEnabled: true,
    });
    t.proxy.faults.set('DescribeTimeToLive', [lookedBefore]);
    expect(await t.store().ensureTable({ timeoutMs: 20_000, pollMs: 20 })).toEqual({
      created: false,
      ttlEnabled: false,
    });
    expect(t.proxy.seen.filter((op) => op === 'UpdateTimeToLive')).toHaveLength(2);
    const ttl = (await t.direct.send(new DescribeTimeToLiveCommand({ TableName: t.tableName })))
      .TimeToLiveDescription;
    expect(ttl).toMatchObject({ TimeToLiveStatus: 'ENABLED', AttributeName: 'ttl' });
  });

  it('TTL turned on for another attribute since this caller looked: InvalidInputError', async () => {
    const t = await setup();
    await t.store().ensureTable({ timeoutMs: 20_000, pollMs: 20 });
    t.proxy.faults.set('DescribeTimeToLive', [lookedBefore]);
    await expect(
      t.store({ attributes: { ttl: 'purgeAt' } }).ensureTable({ timeoutMs: 20_000, pollMs: 20 }),
    ).rejects.toBeInstanceOf(InvalidInputError);
  });

  it('six callers on a new table with lost answers, 5xx, silence and throttling: none fails', async () => {
    const t = await setup();
    t.proxy.faults.set('DescribeTable', ['500', 'silent', 'throttle', '500']);
    t.proxy.faults.set('CreateTable', ['lose-answer', '500', 'lose-answer']);
    t.proxy.faults.set('DescribeTimeToLive', ['500', 'silent']);
    t.proxy.faults.set('UpdateTimeToLive', ['lose-answer', '500']);
    t.proxy.gather('DescribeTimeToLive', 4);
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, () => t.store().ensureTable({ timeoutMs: 30_000, pollMs: 20 })),
    );
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    const values = results.map((r) => (r as PromiseFulfilledResult<{ created: boolean }>).value);
    expect(values.some((v) => v.created)).toBe(true);
    const table = (await t.direct.send(new DescribeTableCommand({ TableName: t.tableName }))).Table;
    expect(table?.TableStatus).toBe('ACTIVE');
    const ttl = (await t.direct.send(new DescribeTimeToLiveCommand({ TableName: t.tableName })))
      .TimeToLiveDescription;
    expect(ttl).toMatchObject({ TimeToLiveStatus: 'ENABLED', AttributeName: 'ttl' });
    // A caller whose key schema differs still fails at once, typed.
    const single = t.store({ singleTable: { partitionKeyValue: 'IDEM' } });
    await expect(single.ensureTable({ timeoutMs: 30_000, pollMs: 20 })).rejects.toBeInstanceOf(
      InvalidInputError,
    );
  }, 60_000);

  it('a table being deleted when the call starts is created again once it is gone', async () => {
    const t = await setup();
    const deleting = {
      answer: {
        Table: {
          TableName: t.tableName,
          TableStatus: 'DELETING',
          KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
          AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
        },
      },
    };
    t.proxy.faults.set('DescribeTable', repeat(deleting, 3));
    const result = await t.store().ensureTable({ timeoutMs: 15_000, pollMs: 20 });
    expect(result).toEqual({ created: true, ttlEnabled: true });
  });

  it('a CreateTable refused as in use (the old table still being deleted) is sent again once it is gone', async () => {
    const t = await setup();
    t.proxy.faults.set('CreateTable', [{ error: 'ResourceInUseException' }]);
    const result = await t.store().ensureTable({ timeoutMs: 15_000, pollMs: 20 });
    expect(result).toEqual({ created: true, ttlEnabled: true });
    expect(t.proxy.seen.filter((op) => op === 'CreateTable')).toHaveLength(2);
  });

  it.each([
    ['DISABLING', 'ttl'],
    ['ENABLED', 'purgeAt'],
    ['ENABLING', 'purgeAt'],
  ])('TTL %s on %s: InvalidInputError at once, no UpdateTimeToLive', async (status, name) => {
    const t = await setup();
    t.proxy.faults.set('DescribeTimeToLive', [
      { answer: { TimeToLiveDescription: { TimeToLiveStatus: status, AttributeName: name } } },
    ]);
    await expect(t.store().ensureTable({ timeoutMs: 20_000, pollMs: 20 })).rejects.toBeInstanceOf(
      InvalidInputError,
    );
    expect(t.proxy.seen).not.toContain('UpdateTimeToLive');
    expect(t.proxy.seen.filter((op) => op === 'DescribeTimeToLive')).toHaveLength(1);
  });
});

describe('ensrev: which failures are sent again', () => {
  it('a 429 with a body that is not DynamoDB JSON (a proxy throttling) is sent again', async () => {
    const t = await setup();
    t.proxy.faults.set('DescribeTable', ['429-plain']);
    const result = await t.store().ensureTable({ timeoutMs: 20_000, pollMs: 20 });
    expect(result).toEqual({ created: true, ttlEnabled: true });
  });

  it.each([
    ['ENETDOWN', () => Object.assign(new Error('connect ENETDOWN'), { code: 'ENETDOWN' })],
    [
      'fetch failed (ECONNRESET)',
      () =>
        new TypeError('fetch failed', {
          cause: Object.assign(new Error('other side closed'), { code: 'ECONNRESET' }),
        }),
    ],
  ])('%s is sent again', async (_label, error) => {
    const t = await setup();
    const failing = failingClient(t.proxy.endpoint, 'DescribeTable', error);
    const result = await t.store({}, failing.client).ensureTable({ timeoutMs: 20_000, pollMs: 20 });
    expect(result).toEqual({ created: true, ttlEnabled: true });
    expect(failing.thrown()).toBe(1);
  });

  it.each(['UnrecognizedClientException', 'AccessDeniedException', 'ExpiredTokenException'])(
    'CreateTable refused with %s: fails at once, one try',
    async (name) => {
      const t = await setup();
      t.proxy.faults.set('CreateTable', [{ error: name }]);
      const error = await t
        .store()
        .ensureTable({ timeoutMs: 20_000, pollMs: 20 })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect(((error as StoreUnavailableError).cause as Error).name).toBe(name);
      expect(t.proxy.seen.filter((op) => op === 'CreateTable')).toHaveLength(1);
    },
  );

  it.each([
    [
      'CredentialsProviderError',
      () =>
        Object.assign(new Error('Could not load credentials from any providers'), {
          name: 'CredentialsProviderError',
          tryNextLink: false,
        }),
    ],
    ['TypeError of a bad client', () => new TypeError('client.config.foo is not a function')],
  ])('%s: fails at once, one try', async (_label, error) => {
    const t = await setup();
    const failing = failingClient(t.proxy.endpoint, 'DescribeTable', error, 100);
    await expect(
      t.store({}, failing.client).ensureTable({ timeoutMs: 20_000, pollMs: 20 }),
    ).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(failing.thrown()).toBe(1);
  });
});
