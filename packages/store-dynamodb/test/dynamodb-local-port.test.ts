import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ForeignServerError,
  freePort,
  startDynamoDbLocal,
  waitForDynamoDb,
} from '../../../scripts/dynamodb-local.mjs';

// The emulator's port is free when picked, but the JVM binds it a second or two later: a
// test server that listens on port 0 meanwhile may get it. That happened in a CI run (a
// Fastify test server answered "Route POST:/ not found" where DynamoDB Local was expected,
// and any HTTP answer counted as ready). Now only DynamoDB's own answer counts, and the
// emulator starts again on another port.

const servers: Server[] = [];
afterAll(async () => {
  for (const server of servers) await new Promise((resolve) => server.close(resolve));
});

/** An HTTP server on loopback answering every request as a web framework's 404 does. */
async function foreignServer(): Promise<number> {
  const server = createServer((_request, response) => {
    response.writeHead(404, { 'content-type': 'application/json' });
    response.end('{"message":"Route POST:/ not found","statusCode":404}');
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

describe('DynamoDB Local on a port another server took', () => {
  it('waitForDynamoDb refuses another server at once, naming it', async () => {
    const port = await foreignServer();
    const started = Date.now();
    await expect(waitForDynamoDb(`http://127.0.0.1:${port}`, 10_000)).rejects.toThrow(
      ForeignServerError,
    );
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('startDynamoDbLocal starts again on another port, and that one answers as DynamoDB', async () => {
    const taken = await foreignServer();
    const picked: number[] = [];
    // What is checked is starting the emulator itself: an external DynamoDB named by
    // DYNAMODB_ENDPOINT (which the README offers for running the suite) would be used
    // instead, with no port picked.
    const external = process.env.DYNAMODB_ENDPOINT;
    delete process.env.DYNAMODB_ENDPOINT;
    const local = await startDynamoDbLocal({
      pickPort: async () => {
        const port = picked.length === 0 ? taken : await freePort();
        picked.push(port);
        return port;
      },
    }).finally(() => {
      if (external !== undefined) process.env.DYNAMODB_ENDPOINT = external;
    });
    try {
      expect(picked.length).toBe(2);
      expect(local.endpoint).toBe(`http://127.0.0.1:${picked[1]}`);
      await waitForDynamoDb(local.endpoint, 5_000);
    } finally {
      await local.stop();
    }
  }, 90_000);
});
