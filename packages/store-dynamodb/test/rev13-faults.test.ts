/**
 * rev13 adversarial review of @idem/store-dynamodb: requests that land late (after the
 * caller gave up on them), operator writes on items that are not records of this store,
 * and large outcomes through the engine.
 */
import { randomBytes } from 'node:crypto';
import { PutItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import {
  createIdempotency,
  deriveStorageKey,
  InvalidInputError,
  ManualClock,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  StoreUnavailableError,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { decodeRaw, layouts, makeClient } from './dynamodb-env.js';
import {
  acquireInput,
  clients,
  endpoint,
  HOUR,
  newKey,
  newOwner,
  setup,
  tables,
} from './store-fixture.js';

type Input = Record<string, unknown>;

/**
 * Arms a middleware that takes the next heartbeat (an UpdateItem that sets the lease and is
 * not an acquire) out of the wire: it keeps a copy of its input and fails it as a timeout
 * would, so the caller sees the heartbeat fail. `deliver()` then sends the very same request
 * on another client: DynamoDB applies it late, as a request held up in the network (or in
 * the service) after the client gave up on it.
 */
function holdNextHeartbeat(client: ReturnType<typeof makeClient>) {
  let armed = false;
  let held: Input | undefined;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as Input;
      const values = (input.ExpressionAttributeValues ?? {}) as Record<string, unknown>;
      if (
        armed &&
        context.commandName === 'UpdateItemCommand' &&
        ':leaseUntil' in values &&
        !(':zero' in values)
      ) {
        armed = false;
        held = structuredClone(input);
        const error = new Error('socket hang up (request held in the network)');
        error.name = 'TimeoutError';
        throw error;
      }
      return next(args);
    },
    { step: 'initialize', name: 'rev13HoldHeartbeat' },
  );
  return {
    arm() {
      armed = true;
    },
    async deliver(): Promise<'applied' | 'refused'> {
      if (!held) throw new Error('no heartbeat was held');
      const other = makeClient(endpoint);
      clients.add(other);
      try {
        await other.send(new UpdateItemCommand(held as never));
        return 'applied';
      } catch (error) {
        // Refused by its condition: what a renewal that comes too late should get.
        if ((error as { name?: string }).name === 'ConditionalCheckFailedException')
          return 'refused';
        throw error;
      }
    },
  };
}

describe.each(layouts)('rev13 DynamoDB: late requests ($name)', (layout) => {
  // FIXED (was FINDING MEDIUM): a heartbeat that landed late shortened a lease a later heartbeat
  // had already renewed. `extend` was `SET leaseUntil = :leaseUntil` on `owner = me AND
  // in_progress AND not expired`: nothing kept the lease from moving back. Heartbeat H1 (sent
  // at t+10 s, lease to t+40 s) is held up and the client gives up on it (timeout,
  // StoreUnavailable); H2 (t+20 s) lands and answers `ok, leaseUntil t+50 s`; then H1 lands
  // (DynamoDB applies a request the client abandoned whenever it reaches it): the item's lease
  // was t+40 s again, and at t+45 s another caller took the key over (fence 2) while the owner
  // ran on a lease the store had told it lasts until t+50 s: two executions at once (DESIGN
  // "exactly once" (a)). MEDIUM: core's lease keeper keeps up to two renewals outstanding at
  // the store on a slow link (lease-keeper.ts: the next one goes out a heartbeat after the
  // previous send, answered or not), so two renewals of one owner race on two connections by
  // design, and DynamoDB may apply them in either order; a request applied after its client
  // gave up (past requestDeadlineMs) does the same.
  // Reproduced deterministically with a manual clock, H1 captured in SDK middleware and sent
  // again later on another client. Fix: renewals carry `AND leaseUntil <= :leaseUntil`; a
  // refused renewal of the caller's own record whose lease already runs later answers ok with
  // that lease (from the refusal's ALL_OLD item, no extra request).
  it('a heartbeat that lands after a later one does not move the lease back: no takeover before the lease the last renewal answered', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const hold = holdNextHeartbeat(t.client);
    const key = newKey();
    const input = acquireInput(key, { leaseMs: 30_000, retentionMs: HOUR });
    expect(await t.store.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
    const renew = { key, owner: input.owner, leaseMs: 30_000, retentionMs: HOUR };

    clock.advance(10_000);
    hold.arm();
    await expect(t.store.extend(renew)).rejects.toBeInstanceOf(StoreUnavailableError);

    clock.advance(10_000);
    const renewed = await t.store.extend(renew);
    expect(renewed).toEqual({ ok: true, leaseUntil: clock.now() + 30_000 });
    const promised = (renewed as { leaseUntil: number }).leaseUntil;

    await hold.deliver();

    // Past H1's lease, before the one H2 answered: the key is still the owner's.
    clock.advance(25_000);
    expect(clock.now()).toBeLessThan(promised);
    const other = await t.store.acquire(acquireInput(key));
    expect(other.kind).toBe('found');
    expect(decodeRaw(layout, (await t.raw(key))!).leaseUntil).toBe(promised);
  }, 20_000);
});

describe.each(layouts)('rev13 DynamoDB: operator writes ($name)', (layout) => {
  // FIXED (was FINDING LOW): `admin.delete` wrote to any item at the key
  // (`attribute_exists(pk)`), also one that is not a record under this store's attribute
  // names, and only then found out: it decoded the ALL_OLD item and threw
  // StoreUnavailableError ("not an idem record"). The item was half-written: the store's
  // status/owner/fingerprint/lease/expiry attributes added beside the item's own, and the
  // caller told the store failed. That is what `idem delete --store dynamodb://<table>` did
  // on an application whose store has custom `attributes` (the CLI cannot name them): exit 1
  // "store_unavailable", the record not deleted, stray attributes left. Fix: the condition
  // requires a record of this store (status one of the three, fence and expiry present); a
  // refusal on another item throws the typed error with nothing written.
  it('admin.delete of an item that is not a record of this store changes nothing and fails typed', async () => {
    const t = setup(layout);
    const key = newKey();
    const foreign = {
      ...t.store.itemKey(key),
      appStatus: { S: 'completed' },
      appOwner: { S: 'someone' },
      appExpiresAt: { N: String(Date.now() + HOUR) },
    };
    await t.client.send(new PutItemCommand({ TableName: tables[layout.id], Item: foreign }));
    const error = await t.store.admin.delete(key).catch((e: unknown) => e);
    expect(await t.raw(key), 'the item is left as it was').toEqual(foreign);
    expect(error).toBeInstanceOf(StoreUnavailableError);
  }, 20_000);

  it('admin.forceRelease and inspect of an item that is not a record change nothing', async () => {
    const t = setup(layout);
    const key = newKey();
    const foreign = { ...t.store.itemKey(key), appStatus: { S: 'in_progress' } };
    await t.client.send(new PutItemCommand({ TableName: tables[layout.id], Item: foreign }));
    await expect(t.store.admin.forceRelease(key)).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(t.store.admin.inspect(key)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await t.raw(key)).toEqual(foreign);
  });

  it('an expired record TTL has not removed yet counts as gone everywhere: get, inspect, forceRelease, owner writes, acquire', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key, { leaseMs: 1_000, retentionMs: 2_000 });
    await t.store.acquire(input);
    clock.advance(3_000);
    expect(await t.raw(key)).toBeDefined();
    expect(await t.store.get(key)).toBeUndefined();
    expect(await t.store.admin.inspect(key)).toBeUndefined();
    expect(await t.store.admin.forceRelease(key)).toEqual({ ok: false, reason: 'not_found' });
    const w = { key, owner: input.owner, retentionMs: HOUR };
    expect(await t.store.extend({ ...w, leaseMs: 1_000 })).toMatchObject({ ok: false });
    expect(await t.store.complete({ ...w, outcome: new Uint8Array([1]) })).toMatchObject({
      ok: false,
    });
    expect(await t.store.admin.delete(key)).toEqual({ deleted: false });
    expect(await t.store.acquire(acquireInput(key))).toMatchObject({
      kind: 'acquired',
      fence: 2,
    });
  });
});

describe('rev13 DynamoDB: an outcome that does not fit, through the engine', () => {
  it('an incompressible 600 KB outcome: typed OUTCOME_TOO_LARGE, nothing half-written, the key is never run again', async () => {
    const client = makeClient(endpoint);
    clients.add(client);
    const layout = layouts[0]!;
    const prefix = `rev13:${randomBytes(4).toString('hex')}:`;
    const store = createDynamoDbStore({
      client,
      tableName: tables[layout.id],
      keyPrefix: prefix,
    });
    const idem = createIdempotency<string>({ store, heartbeatMs: false });
    let runs = 0;
    const big = randomBytes(600 * 1024).toString('base64');
    const request = { key: `k-${newOwner()}`, scope: ['tenant', 'POST /big'] };
    const first = await idem
      .execute(request, async () => {
        runs++;
        return big;
      })
      .catch((e: unknown) => e);
    expect(first).toBeInstanceOf(OutcomeTooLargeError);
    const again = await idem
      .execute(request, async () => {
        runs++;
        return 'second run';
      })
      .catch((e: unknown) => e);
    expect(again).toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
  }, 30_000);
});

/** A TCP proxy to DynamoDB Local that can go down (connections refused, sockets cut) and come back on its port. */
async function startSwitchProxy(upstreamPort: number) {
  const { createServer, connect } = await import('node:net');
  const sockets = new Set<import('node:net').Socket>();
  const track = (socket: import('node:net').Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const make = () =>
    createServer((client) => {
      track(client);
      const upstream = connect({ host: '127.0.0.1', port: upstreamPort });
      track(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
    });
  let server = make();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  let up = true;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    async down() {
      if (!up) return;
      up = false;
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    async up() {
      if (up) return;
      server = make();
      await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
      up = true;
    },
    async close() {
      await this.down();
    },
  };
}

describe('rev13 DynamoDB: an outage longer than the SDK retries, through the engine', () => {
  it('the store goes down while the operation runs and stays down past every retry: execute fails typed in time, the completion lands once it is back, the retry replays, one run', async () => {
    const proxy = await startSwitchProxy(Number(new URL(endpoint).port));
    const { DynamoDBClient } = await import('@aws-sdk/client-dynamodb');
    const { recommendedDynamoDbClientConfig } = await import('../src/index.js');
    const client = new DynamoDBClient({
      endpoint: proxy.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
      ...recommendedDynamoDbClientConfig({
        requestTimeoutMs: 500,
        connectionTimeoutMs: 300,
        maxAttempts: 2,
      }),
    });
    clients.add(client);
    const layout = layouts[0]!;
    const prefix = `rev13o:${randomBytes(4).toString('hex')}:`;
    const store = createDynamoDbStore({
      client,
      tableName: tables[layout.id],
      keyPrefix: prefix,
      requestDeadlineMs: 1_500,
    });
    const idem = createIdempotency<string>({
      store,
      leaseMs: 2_000,
      heartbeatMs: 600,
      storeTimeoutMs: 1_500,
      completionWaitMs: 1_000,
    });
    const request = { key: `k-${newOwner()}`, scope: ['tenant', 'POST /outage'] };
    let runs = 0;
    try {
      const started = performance.now();
      const first = await idem
        .execute(request, async () => {
          runs++;
          await proxy.down();
          return 'charged';
        })
        .catch((e: unknown) => e);
      const tookMs = performance.now() - started;
      expect(first).toBeInstanceOf(StoreUnavailableError);
      expect(tookMs).toBeLessThan(8_000);
      // A retry during the outage: typed, bounded, runs nothing.
      const during = await idem
        .execute(request, async () => {
          runs++;
          return 'again';
        })
        .catch((e: unknown) => e);
      expect(during).toBeInstanceOf(StoreUnavailableError);
      // Down for 6 s: past the lease, every SDK retry and the completion's wait.
      await new Promise((r) => setTimeout(r, 6_000));
      await proxy.up();
      // The engine's background completion lands once the store is back.
      const raw = makeClient(endpoint);
      clients.add(raw);
      const deadline = performance.now() + 10_000;
      let status: string | undefined;
      while (performance.now() < deadline) {
        const { GetItemCommand } = await import('@aws-sdk/client-dynamodb');
        const out = await raw.send(
          new GetItemCommand({
            TableName: tables[layout.id],
            Key: store.itemKey(deriveStorageKey(request.scope, request.key)),
            ConsistentRead: true,
          }),
        );
        status = out.Item?.status?.S;
        if (status === 'completed') break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(status).toBe('completed');
      const retry = await idem.execute(request, async () => {
        runs++;
        return 'third';
      });
      expect(retry).toMatchObject({ value: 'charged', replayed: true });
      expect(runs).toBe(1);
    } finally {
      await proxy.close();
    }
  }, 30_000);
});

describe('rev13 DynamoDB: ensureTable bounds', () => {
  // FIXED (was FINDING LOW): ensureTable's requests (DescribeTable, CreateTable,
  // DescribeTimeToLive, UpdateTimeToLive) carried no deadline: `requestDeadlineMs` bounded
  // only the data path, and `timeoutMs` only the wait between polls. With a client built
  // without timeouts (the SDK's default, which the README warns about), `await
  // store.ensureTable({ timeoutMs: 1000 })` on an endpoint that accepts and never answers
  // hung for ever (measured: still pending after 15 s): a deploy step or a server's start-up
  // that never ends. Fix: every ensureTable request gets the store's AbortSignal deadline
  // (requestDeadlineMs) and fails with StoreUnavailableError past it.
  it('ensureTable on a silent endpoint with a default client settles, typed, within its bounds', async () => {
    const { createServer } = await import('node:net');
    const { DynamoDBClient } = await import('@aws-sdk/client-dynamodb');
    const { within } = await import('./dynrev-proxy.js');
    const sockets = new Set<import('node:net').Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on('data', () => {});
      socket.on('error', () => socket.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    // No timeouts at all: the SDK's defaults.
    const client = new DynamoDBClient({
      endpoint: `http://127.0.0.1:${port}`,
      region: 'us-east-1',
      credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
      maxAttempts: 1,
    });
    clients.add(client);
    const store = createDynamoDbStore({
      client,
      tableName: 'rev13-silent',
      requestDeadlineMs: 500,
    });
    try {
      const result = await within(store.ensureTable({ timeoutMs: 1_000, pollMs: 50 }), 6_000);
      expect(result.settled, `still pending after ${Math.round(result.ms)} ms`).toBe(true);
      if (result.settled) {
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.error).toBeInstanceOf(StoreUnavailableError);
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      server.close();
    }
  }, 15_000);

  // FIXED (was FINDING LOW): ensureTable's `timeoutMs` and `pollMs` were not checked:
  // `timeoutMs: NaN` made `Date.now() >= NaN` false, so a table that never becomes ACTIVE was
  // polled for ever, and `pollMs` 0, negative or NaN polled DescribeTable in a tight loop,
  // billed and throttled. Every other duration of the store is checked. Fix: both checked
  // (InvalidInputError) before any request; pollMs 1 to 2^31 - 1 ms.
  it('ensureTable refuses a timeoutMs or pollMs that is not a duration, before any request', async () => {
    const t = setup(layouts[0]!);
    for (const bad of [
      { pollMs: 0 },
      { timeoutMs: Number.NaN },
      { timeoutMs: -1 },
      { pollMs: Number.NaN },
      { pollMs: -5 },
    ]) {
      t.take();
      await expect(t.store.ensureTable(bad), JSON.stringify(bad)).rejects.toBeInstanceOf(
        InvalidInputError,
      );
      expect(t.take(), 'nothing sent').toEqual([]);
    }
  });
});

describe('rev13 DynamoDB: recommendedDynamoDbClientConfig bounds', () => {
  // FIXED (was FINDING LOW): recommendedDynamoDbClientConfig accepted any safe integer for
  // `requestTimeoutMs` (and `connectionTimeoutMs`), but the request handler arms Node timers
  // with them, and a timer past 2^31 - 1 ms fires after 1 ms (TimeoutOverflowWarning):
  // `{ requestTimeoutMs: 3_000_000_000 }` (someone meaning "no limit in practice") made every
  // request fail at once with "exceeded the configured 3000000000 ms requestTimeout" (seen
  // against DynamoDB Local: 37 ms); the store down for good while DynamoDB is fine. Fix:
  // values past 2_147_483_647 are refused with InvalidInputError, as requestDeadlineMs is.
  it('timeouts past the longest Node timer are refused, not turned into 1 ms', async () => {
    const { recommendedDynamoDbClientConfig } = await import('../src/index.js');
    expect(() => recommendedDynamoDbClientConfig({ requestTimeoutMs: 3_000_000_000 })).toThrow(
      InvalidInputError,
    );
    expect(() => recommendedDynamoDbClientConfig({ connectionTimeoutMs: 2 ** 31 })).toThrow(
      InvalidInputError,
    );
    expect(() =>
      recommendedDynamoDbClientConfig({
        requestTimeoutMs: 2 ** 31 - 1,
        connectionTimeoutMs: 2 ** 31 - 1,
      }),
    ).not.toThrow();
  });
});

describe('rev13 DynamoDB: random lost and late answers through the engine', () => {
  it('12 keys x 3 concurrent callers, 2 processes, random answers lost (SDK retries) and 0-150 ms late: each key runs once, every caller ends with the first outcome', async () => {
    const { startFaultProxy } = await import('./dynrev-proxy.js');
    const { DynamoDBClient } = await import('@aws-sdk/client-dynamodb');
    const { InProgressError } = await import('@idem/core');
    const proxy = await startFaultProxy(Number(new URL(endpoint).port));
    // A seeded generator: the same faults every run.
    let seed = 0x5eed13;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const prefix = `rev13r:${randomBytes(4).toString('hex')}:`;
    const engines = [0, 1].map(() => {
      const client = new DynamoDBClient({
        endpoint: proxy.endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
        maxAttempts: 3,
      });
      clients.add(client);
      const store = createDynamoDbStore({
        client,
        tableName: tables.simple,
        keyPrefix: prefix,
        requestDeadlineMs: 4_000,
      });
      return createIdempotency<string>({ store, leaseMs: 8_000, storeTimeoutMs: 4_000 });
    });
    const runs = new Map<string, number>();
    // The first answers are lost whatever the timer does (a loaded lane once finished all the
    // calls before the timer below lost any).
    proxy.loseNext(2);
    const faults = setInterval(() => {
      proxy.delayMs = Math.floor(random() * 150);
      if (random() < 0.3) proxy.loseNext(1);
    }, 40);
    try {
      const deadline = performance.now() + 20_000;
      const caller = async (key: string, who: number): Promise<string> => {
        const idem = engines[who % 2]!;
        for (;;) {
          if (performance.now() > deadline) throw new Error(`caller of ${key} never finished`);
          try {
            const result = await idem.execute({ key, scope: ['t', 'POST /pay'] }, async () => {
              runs.set(key, (runs.get(key) ?? 0) + 1);
              await new Promise((r) => setTimeout(r, 20 + random() * 60));
              return `paid ${key} by ${who}`;
            });
            return result.value;
          } catch (error) {
            if (error instanceof InProgressError || error instanceof StoreUnavailableError) {
              await new Promise((r) => setTimeout(r, 50 + random() * 100));
              continue;
            }
            throw error;
          }
        }
      };
      const keys = Array.from({ length: 12 }, (_, i) => `order-${i}`);
      const outcomes = await Promise.all(
        keys.map((key) => Promise.all([0, 1, 2].map((who) => caller(key, who)))),
      );
      for (const [i, values] of outcomes.entries()) {
        expect(new Set(values).size, `key ${keys[i]}: ${values.join(' | ')}`).toBe(1);
        expect(runs.get(keys[i]!), `runs of ${keys[i]}`).toBe(1);
      }
      expect(proxy.lost).toBeGreaterThan(0);
    } finally {
      clearInterval(faults);
      await proxy.close();
    }
  }, 30_000);
});
