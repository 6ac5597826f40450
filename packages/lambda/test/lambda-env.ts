import { randomBytes, randomUUID } from 'node:crypto';
import type { IdempotencyStore } from '@idem/core';
import { createDynamoDbStore } from '@idem/store-dynamodb';
import { createRedisStore } from '@idem/store-redis';
import { createFencedLedger, type FencedLedger, REDIS_URL } from '@idem/test-ledger';
import type { Context, DynamoDBRecord, KinesisStreamRecord, SQSEvent, SQSRecord } from 'aws-lambda';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, inject } from 'vitest';
import { functionScope, idempotency } from '../src/index.js';
import { localClient } from './dynamodb-client.js';
import type { Middy } from './middy-versions.js';

/** The stores every scenario runs on. */
export const storeKinds = ['dynamodb', 'redis'] as const;
export type StoreKind = (typeof storeKinds)[number];

/** A store of `kind` under a prefix unique to the test, a fenced ledger beside it, and cleanup. */
export interface Env {
  store: IdempotencyStore;
  ledger: FencedLedger;
  close(): Promise<void>;
}

export async function openEnv(kind: StoreKind): Promise<Env> {
  const prefix = `idem-lambda-test:${randomBytes(4).toString('hex')}:`;
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const ledger = createFencedLedger(redis, `${prefix}ledger:`);
  if (kind === 'redis') {
    return {
      store: createRedisStore({ client: redis, keyPrefix: prefix }),
      ledger,
      async close() {
        await ledger.drop();
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
        redis.disconnect();
      },
    };
  }
  const client = localClient(inject('dynamodbEndpoint'));
  return {
    store: createDynamoDbStore({
      client,
      tableName: inject('dynamodbTable'),
      keyPrefix: prefix,
    }),
    ledger,
    async close() {
      await ledger.drop();
      redis.disconnect();
      client.destroy();
    },
  };
}

/** A Lambda context as the Node runtime passes it, with `remainingMs` left from now. */
export function fakeContext(remainingMs: number, functionName = 'orders-fn'): Context {
  const deadline = Date.now() + remainingMs;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:eu-west-1:123456789012:function:${functionName}`,
    memoryLimitInMB: '256',
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: '2026/11/30/[$LATEST]0123456789abcdef',
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

/** An SQS record (standard queue unless `fifo`). */
export function sqsRecord(body: string, fifo = false, receiveCount = 1): SQSRecord {
  const queue = fifo ? 'orders.fifo' : 'orders';
  return {
    messageId: randomUUID(),
    receiptHandle: randomBytes(24).toString('base64'),
    body,
    attributes: {
      ApproximateReceiveCount: String(receiveCount),
      SentTimestamp: String(Date.now()),
      SenderId: 'AIDAIENQZJOLO23YVJ4VO',
      ApproximateFirstReceiveTimestamp: String(Date.now()),
      ...(fifo
        ? { MessageGroupId: 'group-1', MessageDeduplicationId: randomUUID(), SequenceNumber: '1' }
        : {}),
    },
    messageAttributes: {},
    md5OfBody: 'd41d8cd98f00b204e9800998ecf8427e',
    eventSource: 'aws:sqs',
    eventSourceARN: `arn:aws:sqs:eu-west-1:123456789012:${queue}`,
    awsRegion: 'eu-west-1',
  };
}

/** The same records delivered again: new receipt handles, receive count + 1. */
export function redeliver(event: SQSEvent): SQSEvent {
  return {
    Records: event.Records.map((r) => ({
      ...r,
      receiptHandle: randomBytes(24).toString('base64'),
      attributes: {
        ...r.attributes,
        ApproximateReceiveCount: String(Number(r.attributes.ApproximateReceiveCount) + 1),
      },
    })),
  };
}

let sequence = 49590338271490256608559692538361571095921575989136588898n;

/** A Kinesis record of shard 0 with the next sequence number. */
export function kinesisRecord(data: string): KinesisStreamRecord {
  sequence += 1n;
  const seq = sequence.toString();
  return {
    awsRegion: 'eu-west-1',
    eventID: `shardId-000000000000:${seq}`,
    eventName: 'aws:kinesis:record',
    eventSource: 'aws:kinesis',
    eventSourceARN: 'arn:aws:kinesis:eu-west-1:123456789012:stream/orders',
    eventVersion: '1.0',
    invokeIdentityArn: 'arn:aws:iam::123456789012:role/lambda-role',
    kinesis: {
      kinesisSchemaVersion: '1.0',
      partitionKey: 'order',
      sequenceNumber: seq,
      data: Buffer.from(data).toString('base64'),
      approximateArrivalTimestamp: Date.now() / 1000,
    },
  };
}

/** A DynamoDB Streams INSERT record. */
export function streamRecord(id: string): DynamoDBRecord {
  sequence += 1n;
  return {
    awsRegion: 'eu-west-1',
    eventID: randomBytes(16).toString('hex'),
    eventName: 'INSERT',
    eventSource: 'aws:dynamodb',
    eventVersion: '1.1',
    eventSourceARN:
      'arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-11-30T00:00:00.000',
    dynamodb: {
      ApproximateCreationDateTime: Date.now() / 1000,
      Keys: { id: { S: id } },
      NewImage: { id: { S: id }, amount: { N: '42' } },
      SequenceNumber: sequence.toString(),
      SizeBytes: 64,
      StreamViewType: 'NEW_AND_OLD_IMAGES',
    },
  };
}

export type { SQSEvent };

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A promise's outcome as a value: `{ value }` or `{ error }`. */
export const settle = (p: Promise<unknown>): Promise<{ value?: unknown; error?: unknown }> =>
  p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );

/** An {@link Env} of `kind` opened before each test of the current suite and closed after it. */
export function useEnv(kind: StoreKind): () => Env {
  let env: Env | undefined;
  beforeEach(async () => {
    env = await openEnv(kind);
  });
  afterEach(async () => {
    await env?.close();
  });
  return () => env as Env;
}

/**
 * Runs `fn` as where V8's call sites are not available (`Error.captureStackTrace` captures
 * nothing): idempotency() then cannot tell Middy's own writes of `request.error` from a hook's
 * and decides by the writes alone (the README's fallback). Put back however `fn` ends.
 */
export async function withoutCallSites<T>(fn: () => Promise<T>): Promise<T> {
  const descriptor = Object.getOwnPropertyDescriptor(Error, 'captureStackTrace');
  if (!descriptor) throw new Error('this runtime has no Error.captureStackTrace to take away');
  Object.defineProperty(Error, 'captureStackTrace', { ...descriptor, value: () => {} });
  try {
    return await fn();
  } finally {
    Object.defineProperty(Error, 'captureStackTrace', descriptor);
  }
}

/**
 * A handler of `middy` behind `idempotency()` (key: `event.id`, no `idem.last`) and one later
 * `onError` hook, whose base handler throws on its first run, then answers 'ok'; `runs()`
 * counts the runs of the base handler.
 */
export function throwsOnce(
  middy: Middy,
  store: IdempotencyStore,
  // biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
  onError: (request: any) => Promise<unknown>,
) {
  let runs = 0;
  const handler = middy(async () => {
    runs += 1;
    if (runs === 1) throw new Error('transient');
    return 'ok';
  })
    .use(idempotency({ scope: functionScope, store, key: (e: { id: string }) => e.id }))
    .use({ onError });
  return { handler, runs: () => runs };
}

/**
 * Two `idempotency()` middlewares on one store (the function scope), keyed by `event.id` after
 * their own prefixes: two keys acquired, recorded and released by one invocation.
 */
export function twoMiddlewares(store: IdempotencyStore, outer = 'outer-', inner = 'inner-') {
  const keyed = (prefix: string) =>
    idempotency({ scope: functionScope, store, key: (e: { id: string }) => `${prefix}${e.id}` });
  return [keyed(outer), keyed(inner)] as const;
}

/**
 * A middleware whose `before` puts its own accessor on `request.error`, chaining to the one in
 * place (idempotency()'s watch): a frame of another watcher between Middy and the watch.
 */
export const interposeErrorAccessor = {
  // biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
  before: async (request: any) => {
    const chained = Object.getOwnPropertyDescriptor(request, 'error');
    Object.defineProperty(request, 'error', {
      configurable: true,
      enumerable: true,
      get() {
        return chained?.get?.call(this);
      },
      set(value) {
        chained?.set?.call(this, value);
      },
    });
  },
};

/** A handler that throws on its first run, then answers 'ok'; `runs()` counts. */
export function flaky() {
  let count = 0;
  return {
    run: async () => {
      count += 1;
      if (count === 1) throw new Error('transient');
      return 'ok';
    },
    runs: () => count,
  };
}
