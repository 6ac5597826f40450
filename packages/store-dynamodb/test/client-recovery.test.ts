/**
 * The recommended client settings against real faults of a DynamoDB Local this test owns:
 * kill -9 with a long outage then a restart on the same port, and a silent service
 * (SIGSTOP). Calls must stay bounded throughout and succeed again by themselves once
 * DynamoDB answers.
 */
import { randomBytes } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { StoreUnavailableError } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDynamoDbStore,
  type DynamoDbStore,
  recommendedDynamoDbClientConfig,
} from '../src/index.js';
import { type OwnDynamoDb, startOwnDynamoDb } from './own-dynamodb.js';

// The defaults of recommendedDynamoDbClientConfig(): 2 attempts of at most 2 s each.
const CALL_BOUND = 2 * 2_000;
// Room for the SDK's retry backoff and a loaded 2-core machine.
const SLACK = 1_500;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Attempt {
  ok: boolean;
  ms: number;
  error?: unknown;
}

const external = Boolean(process.env.DYNAMODB_ENDPOINT);
if (external)
  console.warn(
    '[store-dynamodb] DYNAMODB_ENDPOINT is set: the fault tests need their own DynamoDB Local and are SKIPPED',
  );

describe.skipIf(external)(
  'recommended client settings: bounded calls, outages end by themselves',
  () => {
    let service: OwnDynamoDb;
    let client: DynamoDBClient;
    let store: DynamoDbStore;

    beforeAll(async () => {
      service = await startOwnDynamoDb();
      client = new DynamoDBClient({
        endpoint: service.endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
        ...recommendedDynamoDbClientConfig(),
      });
      store = createDynamoDbStore({ client, tableName: 'idem-faults' });
      await store.ensureTable({ pollMs: 50 });
    });
    afterAll(async () => {
      client?.destroy();
      await service?.destroy();
    });

    async function attempt(): Promise<Attempt> {
      const started = performance.now();
      try {
        await store.acquire({
          key: randomBytes(16).toString('hex'),
          fingerprint: 'fp',
          owner: randomBytes(8).toString('hex'),
          leaseMs: 30_000,
          retentionMs: 60_000,
        });
        return { ok: true, ms: performance.now() - started };
      } catch (error) {
        return { ok: false, ms: performance.now() - started, error };
      }
    }

    /** Calls the store every 200 ms until `ms` passed; every call must fail, bounded. */
    async function failuresDuring(ms: number): Promise<Attempt[]> {
      const until = performance.now() + ms;
      const seen: Attempt[] = [];
      while (performance.now() < until) {
        seen.push(await attempt());
        await sleep(200);
      }
      for (const result of seen) {
        expect(result.ok).toBe(false);
        expect(result.error).toBeInstanceOf(StoreUnavailableError);
        expect(result.ms, 'a call outlived its bound').toBeLessThan(CALL_BOUND + SLACK);
      }
      return seen;
    }

    /** Calls the store until one succeeds; returns ms since `from`. */
    async function recovery(from: number): Promise<number> {
      while (performance.now() - from < 20_000) {
        if ((await attempt()).ok) return performance.now() - from;
        await sleep(50);
      }
      throw new Error('the store did not recover within 20 s of DynamoDB answering again');
    }

    const summary = (seen: Attempt[]) =>
      `${seen.length} calls failed, slowest ${Math.round(Math.max(...seen.map((s) => s.ms)))} ms`;

    it('kill -9, down 6.5 s, restarted on the same port: calls fail fast, then succeed at once', async () => {
      expect((await attempt()).ok).toBe(true);
      await service.signal('SIGKILL');
      const seen = await failuresDuring(6_500);
      await service.restart();
      const recoveredMs = await recovery(performance.now());
      expect(recoveredMs).toBeLessThan(2_000);
      console.log(
        `[store-dynamodb] kill -9: ${summary(seen)}; recovered ${Math.round(recoveredMs)} ms after DynamoDB answered`,
      );
    });

    it('SIGSTOP for 6 s (a silent service): every call ends within its bound; service resumes after SIGCONT', async () => {
      expect((await attempt()).ok).toBe(true);
      await service.signal('SIGSTOP');
      const seen = await failuresDuring(6_000);
      expect(seen.some((s) => s.ms >= 2_000 - 50)).toBe(true);
      await service.signal('SIGCONT');
      const recoveredMs = await recovery(performance.now());
      expect(recoveredMs).toBeLessThan(CALL_BOUND + SLACK);
      console.log(
        `[store-dynamodb] SIGSTOP: ${summary(seen)}; recovered ${Math.round(recoveredMs)} ms after SIGCONT`,
      );
    });
  },
);
