import type { Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: a response whose meaning ends in a trailer (`res.addTrailers`: a checksum, a final
// status of a stream). The first client gets it; what does a retry get?

const servers: Server[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start() {
  let runs = 0;
  const app = express();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/export', (_req, res) => {
    runs++;
    res.setHeader('Trailer', 'X-Checksum');
    res.setHeader('content-type', 'text/plain');
    res.write('abc');
    res.addTrailers({ 'X-Checksum': 'sha-abc' });
    res.end();
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, runs: () => runs };
}

/** The whole raw answer (Connection: close); 5 s bound. */
function raw(port: number, key: string): Promise<string> {
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
    socket.write(
      `POST /export HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
  });
}

describe('rev10 express: trailers', () => {
  it('held: the first execution keeps its trailer through the recorder', async () => {
    const { port, runs } = await start();
    const first = await raw(port, 'trailer-first');
    expect(first).toContain('\r\n0\r\nX-Checksum: sha-abc\r\n\r\n');
    expect(runs()).toBe(1);
  });

  // FIXED (was FINDING LOW): trailers (res.addTrailers) were neither recorded nor refused: the first client got "X-Checksum: sha-abc", every replay the body alone (Content-Length framed, no Trailer), silently. The trailer fields the response's Trailer header declares are now recorded and replayed (chunked, named in a Trailer header, sent after the body).
  it('the replay carries the trailer the first client got', async () => {
    const { port, runs } = await start();
    await raw(port, 'trailer-replay');
    const replay = await raw(port, 'trailer-replay');
    expect(replay).toContain('idempotent-replayed: true');
    expect(replay).toMatch(/\r\ntrailer: x-checksum\r\n/i);
    expect(replay).toMatch(/\r\ntransfer-encoding: chunked\r\n/i);
    expect(replay).not.toMatch(/content-length/i);
    // The body, then the trailer section, as the first client got them.
    expect(replay).toMatch(/\r\n\r\n3\r\nabc\r\n0\r\nx-checksum: sha-abc\r\n\r\n$/i);
    expect(runs()).toBe(1);
  });
});
