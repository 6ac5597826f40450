// client31: a request whose headers Node's fetch (undici) refuses on every attempt. It was taken
// for a network error: sent maxAttempts times with backoff, then RETRIES_EXHAUSTED, although
// fetch can never send it (README: "fetch could never send the request ... INVALID_INPUT").
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch, IdemClientError } from '../src/index.js';
import { type RawServer, startRawServer } from './clirev-server.js';

let server: RawServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const refused: [string, Record<string, string>][] = [
  ['Expect: 100-continue', { expect: '100-continue' }],
  ['Connection: upgrade', { connection: 'upgrade' }],
  ['Transfer-Encoding: chunked', { 'transfer-encoding': 'chunked' }],
  ['Upgrade: websocket', { upgrade: 'websocket' }],
  ['Keep-Alive: timeout=5', { 'keep-alive': 'timeout=5' }],
];

describe('client31: headers fetch refuses on every attempt', () => {
  it.each(refused)('%s: INVALID_INPUT at once, nothing retried', async (_name, headers) => {
    server = await startRawServer((_seen, res) => {
      res.end('ok');
    });
    const waits: number[] = [];
    let attempts = 0;
    const idemFetch = createIdempotentFetch({
      sleep: async (ms) => {
        waits.push(ms);
      },
      onAttempt: () => attempts++,
    });
    const error = await idemFetch(`${server.url}/charges`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', ...headers },
      body: 'x',
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdemClientError);
    expect(error).toMatchObject({ code: 'INVALID_INPUT', attempts: 0 });
    expect(attempts).toBe(0);
    expect(waits).toEqual([]);
    expect(server.seen).toHaveLength(0);
  });

  it.each([
    ['Connection: close', { connection: 'close' }],
    ['Connection: keep-alive', { connection: 'Keep-Alive' }],
  ])('held: %s is sent as fetch sends it', async (_name, headers) => {
    server = await startRawServer((_seen, res) => {
      res.end('ok');
    });
    const idemFetch = createIdempotentFetch();
    const response = await idemFetch(`${server.url}/charges`, {
      method: 'POST',
      headers,
      body: 'x',
    });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('ok');
    expect(server.seen).toHaveLength(1);
  });
});
