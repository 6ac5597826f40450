// rev31a (review of client31): the client refuses, before sending, the request headers Node's
// fetch refuses at dispatch. Its `Connection` rule was undici 6's (only `close` or
// `keep-alive`), but undici 7.24.6 and later (Node 24) send any list of options
// (`keep-alive, close`, `upgrade`, two `close` fields): on Node 24 such a request, sent before
// client31, was refused with INVALID_INPUT. Each case is checked against what the running
// Node's own fetch does with it, in every form headers are given (record, array, Headers, a
// Request as input): sent when fetch sends it, refused with nothing sent when it refuses it.
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch, IdemClientError } from '../src/index.js';
import { type RawServer, startRawServer } from './clirev-server.js';

let server: RawServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const undici = process.versions.undici ?? '';
const [major = 0, minor = 0, patch = 0] = undici.split('.').map(Number);
/** undici 7.24.6 and later take a `Connection` list of any tokens. */
const listsSent = major > 7 || (major === 7 && (minor > 24 || (minor === 24 && patch >= 6)));

type Pairs = [string, string][];
const cases: [string, Pairs, 'sent' | 'refused' | 'lists'][] = [
  ['Connection: close', [['Connection', 'close']], 'sent'],
  ['Connection: CLOSE', [['CONNECTION', 'CLOSE']], 'sent'],
  ['Connection: Keep-Alive', [['connection', 'Keep-Alive']], 'sent'],
  ['Connection: Keep-Alive, close', [['Connection', 'Keep-Alive, close']], 'lists'],
  ['Connection: keep-alive,close', [['connection', 'keep-alive,close']], 'lists'],
  ['Connection: Upgrade', [['Connection', 'Upgrade']], 'lists'],
  ['Connection: x-trace', [['Connection', 'x-trace']], 'lists'],
  [
    'two Connection: close fields',
    [
      ['connection', 'close'],
      ['Connection', 'close'],
    ],
    'lists',
  ],
  ['Connection: close,, (an empty option)', [['Connection', 'close,,']], 'refused'],
  ['Connection: "close" (not a token)', [['Connection', '"close"']], 'refused'],
  ['Expect: 100-continue', [['EXPECT', '100-continue']], 'refused'],
  ['Transfer-Encoding: chunked', [['Transfer-Encoding', 'chunked']], 'refused'],
];

const forms: [string, (pairs: Pairs) => HeadersInit | undefined, boolean][] = [
  ['a record', (pairs) => (pairs.length === 1 ? Object.fromEntries(pairs) : undefined), false],
  ['an array', (pairs) => pairs, false],
  [
    'a Headers',
    (pairs) => {
      const headers = new Headers();
      for (const [name, value] of pairs) headers.append(name, value);
      return headers;
    },
    false,
  ],
  ['a Request given as input', (pairs) => pairs, true],
];

/** What the running Node's own fetch does with these headers: sent, or refused at dispatch. */
async function rawFetch(url: string, headers: HeadersInit): Promise<'sent' | 'refused'> {
  try {
    const response = await fetch(url, { method: 'POST', headers, body: 'x' });
    await response.arrayBuffer();
    return 'sent';
  } catch {
    return 'refused';
  }
}

describe(`rev31a: Connection lists as the running fetch sends them (undici ${undici})`, () => {
  for (const [name, pairs, expected] of cases) {
    for (const [form, make, asRequest] of forms) {
      const headers = make(pairs);
      if (headers === undefined) continue;
      it(`${name}, given as ${form}`, async () => {
        server = await startRawServer((_seen, res) => {
          res.end('ok');
        });
        const url = `${server.url}/charges`;
        const verdict = await rawFetch(url, headers);
        const want = expected === 'lists' ? (listsSent ? 'sent' : 'refused') : expected;
        // The premise: Node's own fetch does what the case says on this Node.
        expect(verdict).toBe(want);
        const rawSends = server.seen.length;
        let attempts = 0;
        const idemFetch = createIdempotentFetch({
          maxAttempts: 3,
          sleep: async () => {},
          onAttempt: () => attempts++,
        });
        const answer = await (asRequest
          ? idemFetch(new Request(url, { method: 'POST', headers, body: 'x' }))
          : idemFetch(url, { method: 'POST', headers, body: 'x' })
        ).catch((error: unknown) => error);
        if (want === 'sent') {
          expect(answer).toBeInstanceOf(Response);
          expect((answer as Response).status).toBe(200);
          expect(await (answer as Response).text()).toBe('ok');
          expect(server.seen.length).toBe(rawSends + 1);
        } else {
          expect(answer).toBeInstanceOf(IdemClientError);
          expect(answer).toMatchObject({ code: 'INVALID_INPUT', attempts: 0 });
          expect(attempts).toBe(0);
          expect(server.seen.length).toBe(rawSends);
        }
      });
    }
  }
});
