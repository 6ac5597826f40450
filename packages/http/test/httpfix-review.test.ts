import { connect, type Socket } from 'node:net';
import { send } from '@idem/http-conformance';
import { afterEach, describe, expect, it } from 'vitest';
import { REPLAYED_HEADER } from '../src/index.js';
import {
  closeRecordedServers,
  serveRecorded as serve,
  serverSockets,
} from './support/recorded-server.js';

// Adversarial review (wt/httpfix-review) of 72c75ef, 2596344, 136f488, 446d77f.

const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await closeRecordedServers();
});

interface Raw {
  status: number;
  headers: Record<string, string>;
  head: string;
  body: string;
}
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
const post = (path: string, key: string, method = 'POST') =>
  `${method} ${path} HTTP/1.1\r\nHost: x\r\nidempotency-key: ${key}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`;

/** Parses as many complete responses as `data` holds. */
function parse(data: string, heads: boolean[] = []): Raw[] {
  const out: Raw[] = [];
  let rest = data;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) return out;
    const head = rest.slice(0, end);
    const lines = head.split('\r\n');
    const status = Number((lines[0] ?? '').split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      const n = line.slice(0, i).toLowerCase();
      headers[n] = headers[n]
        ? `${headers[n]}, ${line.slice(i + 1).trim()}`
        : line.slice(i + 1).trim();
    }
    let body = '';
    let after = rest.slice(end + 4);
    if (heads[out.length] || status === 204 || status === 304) {
      // no body
    } else if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const le = after.indexOf('\r\n');
        if (le < 0) return out;
        const size = Number.parseInt(after.slice(0, le), 16);
        if (after.length < le + 2 + size + 2) return out;
        body += after.slice(le + 2, le + 2 + size);
        after = after.slice(le + 2 + size + 2);
        if (size === 0) break;
      }
    } else {
      const len = Number(headers['content-length'] ?? 0);
      if (after.length < len) return out;
      body = after.slice(0, len);
      after = after.slice(len);
    }
    out.push({ status, headers, head, body });
    rest = after;
  }
}

async function pipeline(
  url: string,
  payload: string,
  count: number,
  timeoutMs = 3000,
  heads: boolean[] = [],
) {
  const { port } = new URL(url);
  const socket = connect(Number(port), '127.0.0.1');
  sockets.push(socket);
  await new Promise((resolve) => socket.once('connect', resolve));
  let data = '';
  socket.setEncoding('latin1');
  socket.on('data', (d) => {
    data += d;
  });
  socket.write(payload);
  const deadline = Date.now() + timeoutMs;
  while (parse(data, heads).length < count && Date.now() < deadline) await wait(10);
  return { responses: parse(data, heads), socket, raw: () => data };
}

describe('httpfix review: pipelined, client stays connected', () => {
  it('3 pipelined POSTs, the first slowest: all delivered in order, each recorded once, retries replay', async () => {
    const runs = new Map<string, number>();
    const url = await serve(async (req, res) => {
      runs.set(req.url!, (runs.get(req.url!) ?? 0) + 1);
      const delay = req.url === '/a' ? 150 : req.url === '/b' ? 50 : 0;
      res.setHeader('content-type', 'text/plain');
      res.write(`${req.url} start;`);
      await wait(delay);
      res.end(`${req.url} end`);
    });
    const { responses } = await pipeline(
      url,
      post('/a', 'pa') + post('/b', 'pb') + post('/c', 'pc'),
      3,
    );
    expect(responses.map((r) => r.body)).toEqual([
      '/a start;/a end',
      '/b start;/b end',
      '/c start;/c end',
    ]);
    for (const [path, key] of <[string, string][]>[
      ['/a', 'pa'],
      ['/b', 'pb'],
      ['/c', 'pc'],
    ]) {
      const retry = await send(url, path, { key, body: {} });
      expect(retry.headers[REPLAYED_HEADER]).toBe('true');
      expect(retry.body.toString()).toBe(`${path} start;${path} end`);
    }
    expect([...runs.values()]).toEqual([1, 1, 1]);
  });

  it('5 pipelined, later ones end (with backpressure writers) before the first gets going', async () => {
    const runs = new Map<string, number>();
    const url = await serve(async (req, res) => {
      runs.set(req.url!, (runs.get(req.url!) ?? 0) + 1);
      res.setHeader('content-type', 'application/octet-stream');
      if (req.url === '/p0') await wait(200);
      for (let i = 0; i < 4; i++)
        if (!res.write(Buffer.alloc(64 * 1024, 97 + i)))
          await new Promise((resolve) => res.once('drain', resolve));
      res.end('!');
    });
    let payload = '';
    for (let i = 0; i < 5; i++) payload += post(`/p${i}`, `pp${i}`);
    const { responses } = await pipeline(url, payload, 5, 5000);
    expect(responses.length).toBe(5);
    for (const r of responses) expect(r.body.length).toBe(4 * 64 * 1024 + 1);
    for (let i = 0; i < 5; i++) {
      const retry = await send(url, `/p${i}`, { key: `pp${i}`, body: {} });
      expect(retry.headers[REPLAYED_HEADER]).toBe('true');
      expect(retry.body.length).toBe(4 * 64 * 1024 + 1);
    }
    expect([...runs.values()]).toEqual([1, 1, 1, 1, 1]);
  }, 15_000);

  it('the same key pipelined twice on one socket: the handler runs once', async () => {
    let runs = 0;
    const url = await serve(async (_req, res) => {
      runs++;
      await wait(100);
      res.end('once');
    });
    const { responses } = await pipeline(url, post('/s', 'same') + post('/s', 'same'), 2);
    expect(responses.length).toBe(2);
    expect(responses[0]?.body).toBe('once');
    expect([200, 409]).toContain(responses[1]?.status);
    expect(runs).toBe(1);
  });

  it('keep-alive: 500 requests on one socket, pipelined in pairs; no close listener leak on the socket', async () => {
    const url = await serve(async (req, res) => {
      if (req.url?.endsWith('/slow')) await wait(1);
      res.end('k');
    });
    const { port } = new URL(url);
    const socket = connect(Number(port), '127.0.0.1');
    sockets.push(socket);
    await new Promise((resolve) => socket.once('connect', resolve));
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => {
      data += d;
    });
    let expected = 0;
    for (let i = 0; i < 250; i++) {
      socket.write(post('/x/slow', `ka${i}a`) + post('/x', `ka${i}b`));
      expected += 2;
      while (parse(data).length < expected) await wait(1);
    }
    const server = serverSockets.at(-1)!;
    expect(parse(data).every((r) => r.status === 200)).toBe(true);
    expect(server.listenerCount('close')).toBeLessThan(5);
    expect(server.listenerCount('error')).toBeLessThan(5);
    expect(server.listenerCount('drain')).toBeLessThan(5);
  }, 30_000);
});

describe('httpfix review: the implicit head built early', () => {
  it('res.write(123) (Node refuses the chunk before any head): headersSent stays false, the app can still answer 500', async () => {
    const seen: boolean[] = [];
    const url = await serve((_req, res) => {
      res.setHeader('content-type', 'text/plain');
      try {
        res.write(123 as unknown as string);
      } catch (error) {
        seen.push(res.headersSent);
        throw error;
      }
      res.end('never');
    });
    const first = await send(url, '/w123', { key: 'w123', body: {}, timeoutMs: 2_000 }).catch(
      (error: Error) => ({ status: -1, error: error.message }) as const,
    );
    expect(seen).toEqual([false]); // as Node: ERR_INVALID_ARG_TYPE comes before the head
    expect(first.status).toBe(500);
  });

  it('res.end(123) then the error handler answers 500: the replay is the 500 the client got, not a 200', async () => {
    const url = await serve((_req, res) => {
      res.end(123 as unknown as string);
    });
    const first = await send(url, '/e123', { key: 'e123', body: {}, timeoutMs: 2_000 });
    const retry = await send(url, '/e123', { key: 'e123', body: {}, timeoutMs: 2_000 });
    expect(first.status).toBe(500);
    expect(retry.status).toBe(first.status);
  });

  it('a 204 ended with a body: live has no body, the replay is a 204 without body too', async () => {
    const url = await serve((_req, res) => {
      res.statusCode = 204;
      res.end('ignored by Node');
    });
    const first = await send(url, '/204', { key: 'k204', body: {} });
    const retry = await send(url, '/204', { key: 'k204', body: {} });
    expect(first.status).toBe(204);
    expect(retry.status).toBe(204);
    expect(retry.headers[REPLAYED_HEADER]).toBe('true');
    expect(retry.body.length).toBe(0);
  });

  it('a 304 via writeHead then end(): replay matches', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(304, { etag: '"x"' });
      res.end();
    });
    const first = await send(url, '/304', { key: 'k304', body: {} });
    const retry = await send(url, '/304', { key: 'k304', body: {} });
    expect(first.status).toBe(304);
    expect(retry.status).toBe(304);
    expect(retry.headers.etag).toBe('"x"');
  });

  it('flushHeaders() then end(body): replayed, same status and body', async () => {
    const url = await serve((_req, res) => {
      res.statusCode = 202;
      res.setHeader('content-type', 'text/plain');
      res.flushHeaders();
      res.end('flushed');
    });
    const first = await send(url, '/fh', { key: 'fh', body: {} });
    const retry = await send(url, '/fh', { key: 'fh', body: {} });
    expect(first.status).toBe(202);
    expect(first.body.toString()).toBe('flushed');
    expect(retry.status).toBe(202);
    expect(retry.body.toString()).toBe('flushed');
  });

  it('writeHead twice: Node refuses the second, the first head is what is recorded and delivered', async () => {
    const errors: string[] = [];
    const url = await serve((_req, res) => {
      res.writeHead(201, { etag: '"1"' });
      try {
        res.writeHead(202, { etag: '"2"' });
      } catch (error) {
        errors.push((error as NodeJS.ErrnoException).code ?? '');
      }
      res.end('two');
    });
    const first = await send(url, '/wh2', { key: 'wh2', body: {} });
    const retry = await send(url, '/wh2', { key: 'wh2', body: {} });
    expect(errors).toEqual(['ERR_HTTP_HEADERS_SENT']);
    expect(first.status).toBe(201);
    expect(retry.status).toBe(201);
    expect(retry.headers.etag).toBe('"1"');
  });

  it('writeHead(status, undefined, headers) (Node takes the third argument): recorded headers match', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(201, undefined as unknown as string, {
        'content-type': 'text/x-three',
        etag: '"3"',
      });
      res.end('three');
    });
    const first = await send(url, '/wh3', { key: 'wh3', body: {} });
    const retry = await send(url, '/wh3', { key: 'wh3', body: {} });
    expect(first.headers['content-type']).toBe('text/x-three');
    expect(retry.headers['content-type']).toBe(first.headers['content-type']);
    expect(retry.headers.etag).toBe(first.headers.etag);
  });

  it('end("") then end(): as Node, finish once, status and empty body replayed', async () => {
    const url = await serve((_req, res) => {
      res.statusCode = 201;
      res.end('');
    });
    const first = await send(url, '/emp', { key: 'emp', body: {} });
    const retry = await send(url, '/emp', { key: 'emp', body: {} });
    expect(first.headers['content-length']).toBe('0');
    expect(retry.status).toBe(201);
    expect(retry.body.length).toBe(0);
  });
});
