// consumers32 (client): a request whose Content-Length header does not match its body can never
// be sent (undici fails it, UND_ERR_REQ_CONTENT_LENGTH_MISMATCH, or leaves it hanging when the
// header is shorter), yet it was retried five times with backoff and ended RETRIES_EXHAUSTED.
// It is refused at once (INVALID_INPUT, nothing sent). undici 7 (Node 24) also refuses a value
// that is not all digits (`+3`, two fields `3, 3`), which undici 6 (Node 20) reads with parseInt.
// Each case is checked against what the running Node's own fetch does with it; run on Node 20
// and on Node 24 (test:node24).
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch, IdemClientError } from '../src/index.js';
import { type RawServer, startRawServer } from './clirev-server.js';

let server: RawServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const undici = process.versions.undici ?? '';
const digitsOnly = Number(undici.split('.')[0]) >= 7;

type Body = string | Uint8Array<ArrayBuffer> | Blob | URLSearchParams | undefined;
// [name, Content-Length field values, body, what fetch does: sent / refused / refused by undici 7]
const cases: [string, string[], () => Body, 'sent' | 'refused' | 'strict'][] = [
  ['3 for 3 bytes', ['3'], () => 'abc', 'sent'],
  ['5 for 3 bytes (longer)', ['5'], () => 'abc', 'refused'],
  ['2 for 3 bytes (shorter: fetch hangs)', ['2'], () => 'abc', 'refused'],
  ['4 for 3 bytes of a Uint8Array', ['4'], () => new Uint8Array(3), 'refused'],
  ['3 for a Blob of 4 bytes', ['3'], () => new Blob(['abcd']), 'refused'],
  ['3 for URLSearchParams a=1', ['3'], () => new URLSearchParams({ a: '1' }), 'sent'],
  ['1 for URLSearchParams a=1', ['1'], () => new URLSearchParams({ a: '1' }), 'refused'],
  ['2 for "é" (2 bytes in UTF-8)', ['2'], () => 'é', 'sent'],
  ['1 for "é"', ['1'], () => 'é', 'refused'],
  ['0 for an empty string', ['0'], () => '', 'sent'],
  ['1 for an empty string', ['1'], () => '', 'refused'],
  ['3 without a body (fetch sends 0)', ['3'], () => undefined, 'sent'],
  ['x without a body', ['x'], () => undefined, 'refused'],
  ['an empty value', [''], () => 'abc', 'refused'],
  ['+3 for 3 bytes', ['+3'], () => 'abc', 'strict'],
  ['+3 without a body', ['+3'], () => undefined, 'strict'],
  ['two fields 3 and 3', ['3', '3'], () => 'abc', 'strict'],
];

const headersOf = (values: string[]) => {
  const headers = new Headers({ 'content-type': 'text/plain' });
  for (const value of values) headers.append('Content-Length', value);
  return headers;
};

/** What the running Node's own fetch does: sent, or refused (an error, or no answer in 1.5 s). */
async function rawFetch(url: string, values: string[], body: Body): Promise<'sent' | 'refused'> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: headersOf(values),
      body,
      signal: AbortSignal.timeout(1_500),
    });
    await response.arrayBuffer();
    return 'sent';
  } catch {
    return 'refused';
  }
}

describe(`consumers32: Content-Length against the body (undici ${undici})`, () => {
  for (const [name, values, body, expected] of cases) {
    it(name, { timeout: 20_000 }, async () => {
      server = await startRawServer((_seen, res) => {
        res.end('ok');
      });
      const url = `${server.url}/charges`;
      const want = expected === 'strict' ? (digitsOnly ? 'refused' : 'sent') : expected;
      // The premise: Node's own fetch does what the case says on this Node.
      expect(await rawFetch(`${server.url}/raw`, values, body())).toBe(want);
      const sent = () => server?.seen.filter((seen) => seen.path === '/charges').length;
      let attempts = 0;
      const idemFetch = createIdempotentFetch({
        maxAttempts: 3,
        attemptTimeoutMs: 1_000,
        sleep: async () => {},
        onAttempt: () => attempts++,
      });
      const answer = await idemFetch(url, {
        method: 'POST',
        headers: headersOf(values),
        body: body(),
      }).catch((error: unknown) => error);
      if (want === 'sent') {
        expect(answer).toBeInstanceOf(Response);
        expect(await (answer as Response).text()).toBe('ok');
        expect(sent()).toBe(1);
      } else {
        expect(answer).toBeInstanceOf(IdemClientError);
        expect(answer).toMatchObject({ code: 'INVALID_INPUT', attempts: 0 });
        expect(attempts).toBe(0);
        // Nothing reached the server (a refused raw request may reach it late: its own path).
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(sent()).toBe(0);
      }
    });
  }
});
