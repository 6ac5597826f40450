import { connect } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev12a: 73ebf7b (a charset other than UTF-8 in the fingerprint) through @idem/hono on a
// real @hono/node-server: odd parameter lists never 500, UTF-8 spellings still replay.

const servers: ServerType[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start() {
  let runs = 0;
  const app = new Hono();
  app.use(
    '/notes',
    idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
  );
  app.post('/notes', async (c) => {
    runs++;
    return c.json({ got: await c.req.text() }, 201);
  });
  const port = await new Promise<number>((resolve) => {
    servers.push(
      serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (i) => resolve(i.port)),
    );
  });
  return { port, runs: () => runs };
}

function raw(port: number, key: string, headerLines: Buffer, body: Buffer) {
  return new Promise<{ status: number; replayed: boolean }>((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    const done = (status: number) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ status, replayed: /idempotent-replayed: true/i.test(text) });
    };
    const timer = setTimeout(() => done(0), 3_000);
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3})[\s\S]*?\r\n\r\n/.exec(text);
      if (match) done(Number(match[1]));
    });
    socket.on('close', () => done(0));
    socket.write(
      Buffer.concat([
        Buffer.from(
          `POST /notes HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Length: ${body.length}\r\n`,
        ),
        headerLines,
        Buffer.from('\r\n'),
        body,
      ]),
    );
  });
}

const ct = (value: string) => Buffer.from(`Content-Type: ${value}\r\n`, 'latin1');

describe('rev12a hono: the charset in the fingerprint', () => {
  it('held: UTF-8 spellings are one request (replayed); another charset is 422', async () => {
    const { port, runs } = await start();
    const body = Buffer.from('caf\u00e9');
    expect((await raw(port, 'u', ct('text/plain'), body)).status).toBe(201);
    for (const spelling of [
      'text/plain; charset=UTF-8',
      'text/plain; charset = "utf8"',
      'TEXT/PLAIN;charset=utf-8;',
    ])
      expect([spelling, await raw(port, 'u', ct(spelling), body)]).toEqual([
        spelling,
        { status: 201, replayed: true },
      ]);
    expect((await raw(port, 'u', ct('text/plain; charset=iso-8859-1'), body)).status).toBe(422);
    expect(runs()).toBe(1);
  });

  it('held: odd parameter lists and two Content-Type fields never 500; a resend is a replay', async () => {
    const { port } = await start();
    const cases: Buffer[] = [
      ct('text/plain; charset='),
      ct('text/plain; charset="utf-8'),
      ct('text/plain; charset="a\\"b"'),
      ct('text/plain; charset=\xff'),
      ct('text/plain; x="charset=latin1"'),
      ct(`text/plain; ${'a=b; '.repeat(1_000)}charset=latin1`),
      Buffer.concat([ct('text/plain'), ct('text/plain; charset=latin1')]),
      Buffer.concat([ct('text/plain; charset=latin1'), ct('text/plain')]),
    ];
    let n = 0;
    for (const header of cases) {
      const key = `odd-${n++}`;
      const body = Buffer.from('caf\u00e9');
      const first = await raw(port, key, header, body);
      const again = await raw(port, key, header, body);
      const label = header.toString('latin1').slice(0, 60);
      expect([label, first.status >= 500 || first.status === 0]).toEqual([label, false]);
      if (first.status === 201)
        expect([label, again]).toEqual([label, { status: 201, replayed: true }]);
      else expect([label, again.status >= 500 || again.status === 0]).toEqual([label, false]);
    }
  });
});
