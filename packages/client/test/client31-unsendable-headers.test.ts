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

// rev31a: undici 7.24.6 and later (Node 24) send a `Connection` list of any options (RFC 9110
// 7.6.1); only earlier ones (Node 20) refuse `Connection: upgrade`. Asserted refused there and
// sent here (rev31a-connection-lists.test.ts checks each case against the running fetch).
const [major = 0, minor = 0, patch = 0] = (process.versions.undici ?? '').split('.').map(Number);
const connectionListsSent =
  major > 7 || (major === 7 && (minor > 24 || (minor === 24 && patch >= 6)));
const upgradeConnection: [string, Record<string, string>][] = [
  ['Connection: upgrade', { connection: 'upgrade' }],
];

const refused: [string, Record<string, string>][] = [
  ['Expect: 100-continue', { expect: '100-continue' }],
  ...(connectionListsSent ? [] : upgradeConnection),
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
    ...(connectionListsSent ? upgradeConnection : []),
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
