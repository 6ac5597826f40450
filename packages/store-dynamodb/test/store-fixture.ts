import { randomBytes } from 'node:crypto';
import type { ManualClock } from '@idem/core';
import { expect, inject } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import {
  type Layout,
  makeClient,
  rawItem,
  recordRequests,
  type SentRequest,
} from './dynamodb-env.js';
import { clients } from './fixture-clients.js';

export const endpoint = inject('dynamodbEndpoint');
export const tables = inject('dynamodbTables');
/** The clients a file made (or added): test/close-clients.ts destroys them after the file. */
export { clients };

export const HOUR = 3_600_000;

/**
 * A second store on the same table, client and prefix as `t`'s: another process's, sharing
 * no memory (held leases, released keys) with the first.
 */
export function otherStore(
  layout: Layout,
  t: { client: ReturnType<typeof makeClient>; prefix: string },
  clock: ManualClock,
) {
  return createDynamoDbStore({
    client: t.client,
    tableName: tables[layout.id],
    keyPrefix: t.prefix,
    clock,
    ...layout.options,
  });
}

/** A store on its own counted client (closed after the file's tests), with a fresh key prefix. */
export function setup(layout: Layout, extra: { clock?: ManualClock; maxAttempts?: number } = {}) {
  const client = makeClient(endpoint, extra.maxAttempts ? { maxAttempts: extra.maxAttempts } : {});
  clients.add(client);
  const sent = recordRequests(client);
  const prefix = `t:${randomBytes(5).toString('hex')}:`;
  const tableName = tables[layout.id];
  const store = createDynamoDbStore({
    client,
    tableName,
    keyPrefix: prefix,
    ...(extra.clock ? { clock: extra.clock } : {}),
    ...layout.options,
  });
  return {
    client,
    store,
    sent,
    prefix,
    raw: (key: string) => rawItem(client, tableName, layout, prefix + key),
    /** Requests sent since the last call, by store operation. */
    take(): string[] {
      const ops = sent.map(classify);
      sent.length = 0;
      return ops;
    },
  };
}

/** Which store operation a request belongs to, from what it sends. */
export function classify(request: SentRequest): string {
  // The first attempt of an acquisition is a conditional PutItem of an in-progress item; a
  // completion or release by the process that holds the lease is one of the whole item.
  if (request.command === 'PutItemCommand') {
    const item = (request.input.Item ?? {}) as Record<string, { S?: string }>;
    const statuses = Object.values(item).map((value) => value.S);
    if (statuses.includes('completed')) return 'complete';
    if (statuses.includes('released')) return 'release';
    return 'acquire';
  }
  if (request.command !== 'UpdateItemCommand') return request.command;
  const values = (request.input.ExpressionAttributeValues ?? {}) as Record<string, unknown>;
  if (':zero' in values) return 'acquire';
  if (':completed' in values) return 'complete';
  if (':released' in values) return 'release';
  return 'extend';
}

export const newKey = () => randomBytes(32).toString('hex');
export const newOwner = () => randomBytes(16).toString('base64url');
export const acquireInput = (
  key: string,
  extra: { owner?: string; fingerprint?: string; leaseMs?: number; retentionMs?: number } = {},
) => ({
  key,
  owner: extra.owner ?? newOwner(),
  fingerprint: extra.fingerprint ?? 'fp',
  leaseMs: extra.leaseMs ?? 30_000,
  retentionMs: extra.retentionMs ?? HOUR,
});
/** Byte-for-byte comparison that stays fast on megabytes (deep equality does not). */
export function expectSameBytes(
  actual: Uint8Array | undefined,
  expected: Uint8Array | number[],
): void {
  expect(actual).toBeDefined();
  const a = Buffer.from(actual!);
  const b = Buffer.from(expected);
  expect(a.length, 'length').toBe(b.length);
  expect(a.equals(b), 'bytes').toBe(true);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
