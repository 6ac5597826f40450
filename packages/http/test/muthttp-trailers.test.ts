import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler, OUTCOME_FORMAT } from '../src/index.js';
import { recordServerResponse, sendDecisionResponse } from '../src/node.js';
import { prepareReplay } from '../src/replay.js';
import { described } from './support/recorded-server.js';

// README "Trailers": neither Set-Cookie, hop-by-hop fields nor the fields RFC 9110 (6.5.1)
// keeps out of trailers (Content-Type, Content-Encoding, Cache-Control, ...) are recorded as
// trailers, declared or not; a stored record holding one was not written by @idem/http and
// is refused as corrupt. Mutation audit (muthttp): Content-Encoding could leave that list
// with every other test passing.

const NEVER_TRAILERS = [
  'authorization',
  'cache-control',
  'content-encoding',
  'content-range',
  'content-type',
  'host',
  'max-forwards',
];

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

async function serve(): Promise<{ port: number; runs: () => number }> {
  let runs = 0;
  const idem = createIdempotencyHandler<IncomingMessage>({
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
  });
  server = createServer(async (req, res) => {
    const decision = await idem.begin(described(req));
    if (decision.action === 'respond') return sendDecisionResponse(res, decision);
    if (decision.action === 'execute') recordServerResponse(res, decision.recorder);
    runs++;
    res.setHeader('Trailer', ['X-Checksum', ...NEVER_TRAILERS].join(', '));
    res.setHeader('content-type', 'text/plain');
    res.write('abc');
    const trailers: Record<string, string> = { 'X-Checksum': 'sha-abc' };
    for (const name of NEVER_TRAILERS) trailers[name] = name === 'max-forwards' ? '3' : 'x';
    res.addTrailers(trailers);
    res.end();
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, runs: () => runs };
}

function post(
  port: number,
  key: string,
): Promise<{ body: string; replayed?: string; trailers: NodeJS.Dict<string> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { port, host: '127.0.0.1', method: 'POST', path: '/', headers: { 'idempotency-key': key } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () =>
          resolve({
            body,
            replayed: res.headers['idempotent-replayed'] as string | undefined,
            trailers: res.trailers,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end('x');
  });
}

describe('trailer fields RFC 9110 keeps out of trailers', () => {
  it('are not recorded, declared or not: the replay carries the declared X-Checksum alone', async () => {
    const { port, runs } = await serve();
    const first = await post(port, 't-1');
    expect(first.trailers['content-encoding']).toBe('x');
    const replay = await post(port, 't-1');
    expect(replay.replayed).toBe('true');
    expect(replay.body).toBe('abc');
    expect(replay.trailers).toEqual({ 'x-checksum': 'sha-abc' });
    expect(runs()).toBe(1);
  });

  it('make a stored record holding one corrupt', () => {
    for (const name of NEVER_TRAILERS)
      expect(
        () =>
          prepareReplay({
            meta: {
              format: OUTCOME_FORMAT,
              status: 200,
              headers: [],
              chunks: [3],
              trailers: [[name, 'x']],
            },
            body: new Uint8Array([97, 98, 99]),
          }),
        name,
      ).toThrow(expect.objectContaining({ code: 'OUTCOME_CORRUPT' }));
  });
});
