import { type IncomingHttpHeaders, request, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Trailers on Express beyond the rev10 finding (test/rev10-trailers.test.ts): a streamed body,
// an undeclared trailer (warned of, not replayed), an HTTP/1.0 client, and the outcome cap.

const servers: Server[] = [];
afterAll(() =>
  Promise.all(
    servers.map(
      (server) =>
        new Promise((resolve) => {
          server.closeAllConnections();
          server.close(resolve);
        }),
    ),
  ),
);

async function start(maxOutcomeBytes?: number) {
  let runs = 0;
  const warnings: string[] = [];
  const app = express();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: (message) => warnings.push(message),
      ...(maxOutcomeBytes ? { maxOutcomeBytes } : {}),
    }),
  );
  app.post('/stream', async (_req, res) => {
    runs++;
    res.setHeader('Trailer', 'X-Checksum, X-Rows');
    res.type('text/plain');
    for (let i = 0; i < 5; i++) {
      res.write(`row ${i}\n`);
      await new Promise((resolve) => setImmediate(resolve));
    }
    res.addTrailers([
      ['X-Checksum', 'sha-rows'],
      ['X-Rows', '5'],
      ['X-Took-Ms', '12'],
    ]);
    res.end();
  });
  app.post('/big-trailer', (_req, res) => {
    runs++;
    res.setHeader('Trailer', 'X-Big');
    res.write('abc');
    res.addTrailers({ 'X-Big': 'v'.repeat(4_000) });
    res.end();
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, runs: () => runs, warnings };
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  trailers: NodeJS.Dict<string>;
}

/** A POST to `path` with `key` through node:http's client, which reads trailers; 5 s bound. */
function post(port: number, path: string, key: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method: 'POST', path, headers: { 'idempotency-key': key } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts).toString('latin1'),
            trailers: res.trailers,
          });
        });
      },
    );
    const timer = setTimeout(() => req.destroy(new Error('no answer within 5 s')), 5_000);
    req.on('error', reject);
    req.end();
  });
}

/** The whole raw answer to an HTTP/1.0 POST (the server closes); 5 s bound. */
function raw10(port: number, path: string, key: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(new Error('no answer within 5 s')), 5_000);
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
    socket.write(`POST ${path} HTTP/1.0\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`);
  });
}

const ROWS = 'row 0\nrow 1\nrow 2\nrow 3\nrow 4\n';

describe('express: trailers', () => {
  it('a streamed body: the replay has the same bytes, then the declared trailers', async () => {
    const { port, runs, warnings } = await start();
    const first = await post(port, '/stream', 'e-stream');
    expect(first.body).toBe(ROWS);
    expect(first.trailers).toEqual({ 'x-checksum': 'sha-rows', 'x-rows': '5', 'x-took-ms': '12' });
    const replay = await post(port, '/stream', 'e-stream');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers.trailer).toBe('x-checksum, x-rows');
    expect(replay.body).toBe(ROWS);
    // X-Took-Ms was not declared: not recorded, and a warning names it.
    expect(replay.trailers).toEqual({ 'x-checksum': 'sha-rows', 'x-rows': '5' });
    expect(
      warnings.filter((w) => /Trailer field\(s\) x-took-ms .* not recorded/.test(w)),
    ).toHaveLength(1);
    expect(runs()).toBe(1);
  });

  it('an HTTP/1.0 client gets the replay without trailers, its body whole', async () => {
    const { port, runs } = await start();
    await post(port, '/stream', 'e-old');
    const answer = await raw10(port, '/stream', 'e-old');
    expect(answer).toContain('idempotent-replayed: true');
    expect(answer).not.toMatch(/trailer|x-checksum|chunked/i);
    expect(answer.endsWith(`\r\n\r\n${ROWS}`)).toBe(true);
    expect(runs()).toBe(1);
  });

  it('trailers count toward maxOutcomeBytes: over it, a retry gets outcome-not-recorded', async () => {
    const { port, runs } = await start(2_048);
    const first = await post(port, '/big-trailer', 'e-big');
    expect(first.trailers['x-big']).toHaveLength(4_000);
    const retry = await post(port, '/big-trailer', 'e-big');
    expect(retry.status).toBe(500);
    expect(retry.body).toContain('outcome-not-recorded');
    expect(runs()).toBe(1);
  });
});
