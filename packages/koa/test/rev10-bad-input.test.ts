import type { Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: bad input gets a clear 4xx (a problem body where idem answers), never a 500.

const servers: Server[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start() {
  const runs: string[] = [];
  const app = new Koa();
  app.silent = true;
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.use((ctx) => {
    runs.push(ctx.originalUrl);
    ctx.status = 201;
    ctx.body = { ok: true };
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, runs };
}

/** A raw request head (as written, bytes as Latin-1), a 2-byte JSON body; 5 s bound. */
function raw(port: number, target: string, headers: string) {
  return new Promise<{ status: number; type: string | undefined }>((resolve, reject) => {
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
      const head = data.split('\r\n\r\n')[0] ?? '';
      resolve({
        status: Number(head.split(' ')[1]),
        type: /\r\ncontent-type: ([^\r]*)/i.exec(head)?.[1],
      });
    });
    socket.write(
      Buffer.from(
        `POST ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n${headers}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
        'latin1',
      ),
    );
  });
}

describe('rev10 koa: request targets the URL parser refuses', () => {
  // FIXED (was FINDING LOW): an absolute-form target whose authority the URL parser refuses (port 99999, a bad escape in the host) makes begin() throw a TypeError from requestTarget: a 500 (Koa's text/plain Internal Server Error) instead of a 400 problem
  it('http://a:99999/x and http://a%zz/x: a 400 problem, nothing run', async () => {
    const { port, runs } = await start();
    for (const target of ['http://a:99999/x', 'http://a%zz/x', 'https://user@:80/x']) {
      const answer = await raw(port, target, 'Idempotency-Key: k1\r\n');
      // Observed: 500 for each.
      expect(answer.status, target).toBeGreaterThanOrEqual(400);
      expect(answer.status, target).toBeLessThan(500);
      expect(answer.status, target).toBe(400);
      expect(answer.type, target).toMatch(/^application\/problem\+json/);
    }
    expect(runs).toEqual([]);
  });

  it('held: a valid absolute-form target runs and replays', async () => {
    const { port, runs } = await start();
    expect((await raw(port, 'http://a:8080/x', 'Idempotency-Key: k2\r\n')).status).toBe(201);
    expect((await raw(port, 'http://a:8080/x', 'Idempotency-Key: k2\r\n')).status).toBe(201);
    expect(runs).toEqual(['http://a:8080/x']);
  });
});

describe('rev10 koa: malformed keys over a raw socket (held)', () => {
  const bad: [string, string][] = [
    ['an empty value', 'Idempotency-Key: \r\n'],
    ['an empty quoted string', 'Idempotency-Key: ""\r\n'],
    ['256 characters', `Idempotency-Key: ${'a'.repeat(256)}\r\n`],
    ['a Latin-1 byte (0xE9)', 'Idempotency-Key: caf\u00e9\r\n'],
    ['a UTF-8 sequence', 'Idempotency-Key: caf\u00c3\u00a9\r\n'],
    ['an sf-list of two strings', 'Idempotency-Key: "a", "b"\r\n'],
    ['two header lines, same value', 'Idempotency-Key: a\r\nIdempotency-Key: a\r\n'],
    ['two header lines, the first empty', 'Idempotency-Key: \r\nidempotency-key: a\r\n'],
    ['a bare key with a quote', 'Idempotency-Key: a"b\r\n'],
    ['an unknown escape', 'Idempotency-Key: "a\\nb"\r\n'],
    ['an sf-inner-list', 'Idempotency-Key: ("a")\r\n'],
    ['an sf-token parameter with OWS before ;', 'Idempotency-Key: "a" ;p=1\r\n'],
  ];
  it('each: 400 application/problem+json, nothing run', async () => {
    const { port, runs } = await start();
    for (const [name, headers] of bad) {
      const answer = await raw(port, '/charges', headers);
      expect(answer.status, name).toBe(400);
      expect(answer.type, name).toMatch(/^application\/problem\+json/);
    }
    expect(runs).toEqual([]);
  });

  it('a quoted key with parameters is the bare key (replayed, run once)', async () => {
    const { port, runs } = await start();
    expect((await raw(port, '/charges', 'Idempotency-Key: "k-3";p=1;q\r\n')).status).toBe(201);
    expect((await raw(port, '/charges', 'Idempotency-Key: k-3\r\n')).status).toBe(201);
    expect((await raw(port, '/charges', 'Idempotency-Key:   k-3   \r\n')).status).toBe(201);
    expect(runs).toEqual(['/charges']);
  });
});
