import { fileURLToPath } from 'node:url';
import { getIdempotencyInfo } from '@idem/client';
import { generateKey } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postMessage, type Stack, startStack } from './stack.js';

interface DynamoDbLocal {
  endpoint: string;
  stop(): Promise<void>;
}

// The repository's DynamoDB Local helper (DYNAMODB_ENDPOINT, or the emulator it fetched;
// it fails with a message that says how to provide Java or an endpoint).
const helper = fileURLToPath(new URL('../../../scripts/dynamodb-local.mjs', import.meta.url));

describe('llm-api end to end on DynamoDB (Local)', () => {
  let local: DynamoDbLocal;
  let stack: Stack;
  beforeAll(async () => {
    const { startDynamoDbLocal } = (await import(helper)) as {
      startDynamoDbLocal(): Promise<DynamoDbLocal>;
    };
    local = await startDynamoDbLocal();
    stack = await startStack('dynamodb', {
      DYNAMODB_TABLE: `llm-api-test-${generateKey().slice(0, 8)}`,
      DYNAMODB_ENDPOINT: local.endpoint,
      AWS_REGION: 'us-east-1',
    });
  }, 90_000);
  afterAll(async () => {
    await stack?.close();
    await local?.stop();
  });

  it('creates once, replays on retry and after a dropped answer, and bills once per message', async () => {
    const key = generateKey();
    const before = await stack.usage();
    const first = await postMessage(stack, `dynamo ${key.slice(0, 8)}`, { 'idempotency-key': key });
    expect(first.status).toBe(201);
    const again = await postMessage(stack, `dynamo ${key.slice(0, 8)}`, { 'idempotency-key': key });
    expect(getIdempotencyInfo(again.response)?.replayed).toBe(true);
    expect(again.json).toEqual(first.json);

    const dropped = await postMessage(stack, `dynamo dropped ${key.slice(0, 8)}`, {
      'x-demo-fault': 'drop-response',
    });
    expect(getIdempotencyInfo(dropped.response)).toMatchObject({ attempts: 2, replayed: true });

    const dupKey = generateKey();
    const dups = await Promise.all(
      Array.from({ length: 4 }, () =>
        postMessage(stack, `[slow:15] dynamo dup ${dupKey.slice(0, 8)}`, {
          'idempotency-key': dupKey,
        }),
      ),
    );
    expect(new Set(dups.map((d) => d.json.id)).size).toBe(1);

    const after = await stack.usage();
    expect(after.model_executions.completed - before.model_executions.completed).toBe(3);
    expect(after.totals.messages - before.totals.messages).toBe(3);
    expect(after.totals.total_tokens - before.totals.total_tokens).toBe(
      first.json.usage.total_tokens +
        dropped.json.usage.total_tokens +
        (dups[0]?.json.usage.total_tokens ?? 0),
    );
  });
});
