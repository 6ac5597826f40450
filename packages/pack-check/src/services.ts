/**
 * The services the README examples talk to: Redis and PostgreSQL as running (REDIS_URL,
 * DATABASE_URL), DynamoDB Local started here, and a real idempotent API on loopback for
 * the client example.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { withIdempotency } from '@idem/http';
import { sendWebResponse } from '@idem/http/node';
import { createMemoryStore } from '@idem/store-memory';
// The same module `node scripts/dynamodb-local.mjs start` runs.
import { startDynamoDbLocal } from '../../../scripts/dynamodb-local.mjs';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A charges API with Idempotency-Key on the workspace's @idem/http, for the client example. */
export async function startChargesApi(): Promise<{ origin: string; close: () => Promise<void> }> {
  let next = 1;
  const handler = withIdempotency(
    async (request) => Response.json({ id: next++, ...(await request.json()) }, { status: 201 }),
    { store: createMemoryStore(), scope: () => ({ principal: 'pack-check' }) },
  );
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (typeof value === 'string') headers.set(name, value);
    }
    const request = new Request(`http://127.0.0.1${req.url}`, {
      method: req.method,
      headers,
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    await sendWebResponse(res, await handler(request));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Environment for the DynamoDB example: DynamoDB Local, with dummy credentials. */
export async function startDynamoDb(): Promise<{
  env: NodeJS.ProcessEnv;
  stop: () => Promise<void>;
}> {
  const local = await startDynamoDbLocal();
  return {
    env: {
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'packcheck',
      AWS_SECRET_ACCESS_KEY: 'packcheck',
      AWS_ENDPOINT_URL_DYNAMODB: local.endpoint,
    },
    stop: local.stop,
  };
}
