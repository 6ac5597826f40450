// client31: an option given as `null` (a JSON config's empty field) takes its default, as the
// options' contract says (resolveFetchOptions: "An option given as `undefined` (or `null`)
// takes its default") and as every other option does (`maxAttempts: null` is 5). Only
// `attemptTimeoutMs` and `deadlineMs` refused it ("must be a positive number"), so a config
// whose `deadlineMs` is null could not make a fetch at all.
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch, getIdempotencyInfo } from '../src/index.js';
import { type RawServer, startRawServer } from './clirev-server.js';

let server: RawServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('client31: null options take their default', () => {
  it.each(['attemptTimeoutMs', 'deadlineMs', 'maxAttempts', 'maxBufferedBodyBytes'])(
    '%s: null',
    async (name) => {
      server = await startRawServer((seen, res) => {
        res.statusCode = seen.n === 1 ? 503 : 201;
        res.end('done');
      });
      const idemFetch = createIdempotentFetch({
        [name]: null,
        minDelayMs: 1,
        initialDelayMs: 1,
      } as never);
      const response = await idemFetch(`${server.url}/charges`, { method: 'POST', body: 'x' });
      expect(response.status).toBe(201);
      expect(getIdempotencyInfo(response)?.attempts).toBe(2);
    },
  );
});
