import { connect } from 'node:net';
import { send } from '@idem/http-conformance';
import { afterEach, describe, expect, it } from 'vitest';
import { REPLAYED_HEADER } from '../src/index.js';
import {
  type RecordedApp as App,
  closeRecordedServers,
  serveRecorded as serve,
} from './support/recorded-server.js';

// Adversarial review of recordServerResponse (wt/httpcpu): real node:http servers on loopback.

afterEach(closeRecordedServers);

describe('recordServerResponse review (wt/httpcpu)', () => {
  it("a writeHead that Node refuses (control char in a header value) does not get the app's 500 recorded as a 201", async () => {
    let runs = 0;
    const url = await serve((_req, res) => {
      runs++;
      // Headers accepts \x01; Node's writeHead throws ERR_INVALID_CHAR after the recorder started.
      res.writeHead(201, { 'content-type': 'text/plain', 'x-trace': 'a\u0001b' });
      res.end('created');
    });
    const first = await send(url, '/wh', { key: 'wh-invalid-char', body: {} });
    expect(first.status).toBe(500);
    const retry = await send(url, '/wh', { key: 'wh-invalid-char', body: {} });
    // The first caller saw a 500; a retry must never be told the operation succeeded with 201.
    expect(retry.status).not.toBe(201);
    expect(retry.status).toBe(first.status);
    expect(runs).toBeGreaterThanOrEqual(1);
  });

  it('a writeHead with an odd-length header array (Node throws) does not record the error body under its status', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200, ['content-type', 'text/plain', 'x-odd']);
      res.end('ok');
    });
    const first = await send(url, '/odd', { key: 'wh-odd', body: {} });
    expect(first.status).toBe(500);
    const retry = await send(url, '/odd', { key: 'wh-odd', body: {} });
    expect(retry.status).toBe(500);
  });

  it('writeHead with a flat header array repeating a recorded field (Link) replays both values', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200, [
        'content-type',
        'text/plain',
        'link',
        '</a>; rel=a',
        'link',
        '</b>; rel=b',
      ]);
      res.end('links');
    });
    const first = await send(url, '/links', { key: 'wh-links', body: {} });
    const replay = await send(url, '/links', { key: 'wh-links', body: {} });
    expect(replay.headers[REPLAYED_HEADER]).toBe('true');
    expect(first.headers.link).toBe('</a>; rel=a, </b>; rel=b');
    expect(replay.headers.link).toBe(first.headers.link);
  });

  it('writeHead with [name, value] entries: each value of a repeated field is kept', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200, [
        ['content-type', 'text/plain'],
        ['link', '</a>; rel=a'],
        ['link', '</b>; rel=b'],
      ]);
      res.end('links');
    });
    const first = await send(url, '/links2', { key: 'wh-links-entries', body: {} });
    const replay = await send(url, '/links2', { key: 'wh-links-entries', body: {} });
    expect(replay.headers[REPLAYED_HEADER]).toBe('true');
    expect(first.headers.link).toBe('</a>; rel=a, </b>; rel=b');
    expect(replay.headers.link).toBe(first.headers.link);
  });

  it('a flat header array after setHeader: the replay has what Node sent (it replaces the set field)', async () => {
    const url = await serve((_req, res) => {
      res.setHeader('link', '</old>; rel=old');
      res.setHeader('content-type', 'text/plain');
      res.writeHead(200, ['link', '</a>; rel=a', 'link', '</b>; rel=b']);
      res.end('links');
    });
    const first = await send(url, '/links3', { key: 'wh-links-set', body: {} });
    const replay = await send(url, '/links3', { key: 'wh-links-set', body: {} });
    expect(replay.headers[REPLAYED_HEADER]).toBe('true');
    // Node 22+ keeps both values here; Node 20 keeps the last (nodejs/node#50394).
    expect(first.headers.link).toBe(
      Number(process.versions.node.split('.')[0]) >= 22
        ? '</a>; rel=a, </b>; rel=b'
        : '</b>; rel=b',
    );
    expect(replay.headers.link).toBe(first.headers.link);
    expect(replay.headers['content-type']).toBe('text/plain');
  });

  it('res.end(cb) called a second time calls its callback, as Node does (no hang)', async () => {
    const url = await serve(async (_req, res) => {
      res.end('once');
      const outcome = await Promise.race([
        new Promise<string>((resolve) => res.end(() => resolve('called'))),
        new Promise<string>((resolve) => setTimeout(() => resolve('never called'), 500)),
      ]);
      ended.push(outcome);
    });
    const ended: string[] = [];
    await send(url, '/twice', { key: 'end-twice', body: {} });
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(ended).toEqual(['called']);
  });

  it('a second res.end(chunk) is refused by Node (ERR_STREAM_WRITE_AFTER_END), as a late write is', async () => {
    const errors: string[] = [];
    const url = await serve((_req, res) => {
      res.on('error', (error) => errors.push((error as NodeJS.ErrnoException).code ?? ''));
      res.end('first');
      res.end('second');
    });
    const first = await send(url, '/twice2', { key: 'end-twice-chunk', body: {} });
    expect(first.body.toString()).toBe('first');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(errors).toEqual(['ERR_STREAM_WRITE_AFTER_END']);
  });

  it('a pipelined response whose client left before it got its socket frees its key (not held for maxHoldMs)', async () => {
    const runs = new Map<string, number>();
    const url = await serve(
      async (req, res) => {
        runs.set(req.url ?? '', (runs.get(req.url ?? '') ?? 0) + 1);
        res.setHeader('content-type', 'application/octet-stream');
        if (req.url === '/first') {
          res.write('first ');
          await new Promise((resolve) => setTimeout(resolve, 200));
          res.end('done');
          return;
        }
        // A writer that respects backpressure, as pipe/pipeline/sendFile do.
        for (let i = 0; i < 64; i++)
          if (!res.write(Buffer.alloc(64 * 1024, 97)))
            await new Promise((resolve) => res.once('drain', resolve));
        res.end();
      },
      { leaseMs: 300 },
    );
    const { port } = new URL(url);
    const request = (path: string, key: string) =>
      `POST ${path} HTTP/1.1\r\nHost: x\r\nx-tenant: tenant-a\r\nidempotency-key: ${key}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`;
    const socket = connect(Number(port), '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(request('/first', 'pipe-a') + request('/second', 'pipe-b'));
    await new Promise((resolve) => socket.once('data', resolve));
    socket.destroy();
    // Several leases later: the second key was either recorded or released, never still held.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const retry = await send(url, '/second', { key: 'pipe-b', body: {}, timeoutMs: 3_000 });
    expect(retry.status).not.toBe(409);
    expect(retry.status).toBe(200);
  }, 10_000);

  it('a pipelined response whose client left before its socket: its writer gets drain, its close comes once, after the end', async () => {
    const events: string[] = [];
    const url = await serve(
      async (req, res) => {
        if (req.url === '/first') {
          res.write('first ');
          await new Promise((resolve) => setTimeout(resolve, 200));
          res.end('done');
          return;
        }
        res.on('close', () => events.push('close'));
        res.setHeader('content-type', 'application/octet-stream');
        for (let i = 0; i < 8; i++)
          if (!res.write(Buffer.alloc(64 * 1024, 98))) {
            await new Promise((resolve) => res.once('drain', resolve));
            events.push('drain');
          }
        events.push('end');
        res.end();
      },
      { leaseMs: 300 },
    );
    const { port } = new URL(url);
    const request = (path: string, key: string) =>
      `POST ${path} HTTP/1.1\r\nHost: x\r\nx-tenant: tenant-a\r\nidempotency-key: ${key}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`;
    const socket = connect(Number(port), '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(request('/first', 'pipe-c') + request('/second', 'pipe-d'));
    await new Promise((resolve) => socket.once('data', resolve));
    socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(events[0]).toBe('drain');
    expect(events.slice(-2)).toEqual(['end', 'close']);
    expect(events.filter((event) => event === 'close')).toHaveLength(1);
    const retry = await send(url, '/second', { key: 'pipe-d', body: {}, timeoutMs: 3_000 });
    expect(retry.status).toBe(200);
    expect(retry.headers[REPLAYED_HEADER]).toBe('true');
    expect(retry.body.length).toBe(8 * 64 * 1024);
  }, 10_000);

  describe("a head Node refuses is never recorded (the app's 500 is what a retry sees)", () => {
    const cases: [string, App][] = [
      [
        'setHeader with a control character (Node refuses it there)',
        (_req, res) => {
          res.statusCode = 201;
          res.setHeader('x-trace', 'a\u0001b');
          res.end('created');
        },
      ],
      [
        'writeHead after setHeader (Node merges, then refuses)',
        (_req, res) => {
          res.setHeader('content-type', 'text/plain');
          res.writeHead(201, { 'x-trace': 'a\u0001b' });
          res.end('created');
        },
      ],
      [
        'the implicit head of a first write whose bytes are held (status out of range)',
        (_req, res) => {
          res.statusCode = 1000;
          res.setHeader('content-length', '7');
          try {
            res.write('created');
          } catch (error) {
            res.removeHeader('content-length'); // for the error handler's 500
            throw error;
          }
          res.end();
        },
      ],
      [
        'the implicit head of a first end (status out of range)',
        (_req, res) => {
          res.statusCode = 1000;
          res.end('created');
        },
      ],
    ];
    for (const [index, [name, app]] of cases.entries())
      it(name, async () => {
        let runs = 0;
        const url = await serve((req, res) => {
          runs++;
          return app(req, res);
        });
        const key = `refused-${index}`;
        const first = await send(url, '/refused', { key, body: {} });
        expect(first.status).toBe(500);
        const retry = await send(url, '/refused', { key, body: {} });
        expect(retry.status).toBe(500);
        expect(retry.headers[REPLAYED_HEADER]).toBeUndefined();
        expect(runs).toBe(2);
      });
  });
});
