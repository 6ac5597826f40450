import { once } from 'node:events';
import { type ClientHttp2Session, connect as http2Connect } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { closeTapApps, head, tapApp } from './fastify-tap-review-kit.js';

// What fixing fastify8's review took besides its own tests: HTTP/2 (a recorded first answer
// arrives whole; a reset mid-body on the plain JSON path runs nothing; 413 and 408 close the
// stream, not the session), empty bodies, and the bounded drain after a pulled 413. Real
// servers on 127.0.0.1 (raw sockets, http2.connect).

const h2Fastify = () => Fastify({ http2: true });
type H2App = ReturnType<typeof h2Fastify>;

const open: { app: H2App; session?: ClientHttp2Session }[] = [];
afterEach(async () => {
  for (const { app, session } of open.splice(0)) {
    session?.destroy();
    await app.close();
  }
  await closeTapApps();
});

interface H2Answer {
  status: number;
  body: string;
  replayed: boolean;
  /** The client had not ended its upload when the stream closed. */
  closedMidUpload: boolean;
  rstCode: number | undefined;
}

/** An h2c app with the plugin, set up by `setup`, and a session to it. */
async function h2(
  setup: (app: H2App) => void,
  options: { maxBodyBytes?: number; bodyTimeoutMs?: number } = {},
) {
  const app = h2Fastify();
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
    ...options,
  });
  setup(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  const session = http2Connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  open.push({ app, session });
  /** A request whose body parts go out 2 ms apart; `stall`: never ends its upload. */
  const request = (
    headers: Record<string, string>,
    parts: Buffer[],
    stall = false,
  ): Promise<H2Answer> =>
    new Promise((resolve) => {
      const stream = session.request(
        { ':method': 'POST', ':path': '/u', ...headers },
        { endStream: parts.length === 0 && !stall },
      );
      let status = 0;
      let replayed = false;
      let ended = parts.length === 0 && !stall;
      const body: Buffer[] = [];
      stream.on('response', (h) => {
        status = Number(h[':status']);
        replayed = h['idempotent-replayed'] === 'true';
      });
      stream.on('data', (c: Buffer) => body.push(c));
      stream.on('error', () => {});
      stream.on('close', () =>
        resolve({
          status,
          body: Buffer.concat(body).toString(),
          replayed,
          closedMidUpload: !ended,
          rstCode: stream.rstCode,
        }),
      );
      (async () => {
        for (const p of parts) {
          if (stream.destroyed || status) break;
          stream.write(p);
          await sleep(2);
        }
        if (!stall && !stream.destroyed && !status) {
          ended = true;
          stream.end();
        }
      })();
    });
  return { app, session, request };
}

const up = (key: string) => ({ 'content-type': 'application/x-upload', 'idempotency-key': key });

describe('HTTP/2', () => {
  it("a recorded first answer arrives whole (Node's Http2ServerResponse.end(chunk) writes through the recorder's write)", async () => {
    let runs = 0;
    const { request } = await h2((app) => {
      app.post('/u', async (req) => ({ runs: ++runs, echo: req.body }));
    });
    const h = { 'content-type': 'application/json', 'idempotency-key': 'whole' };
    const first = await request(h, [Buffer.from('{"n":1}')]);
    expect(first.status).toBe(200);
    expect(first.rstCode).toBe(0);
    expect(JSON.parse(first.body)).toEqual({ runs: 1, echo: { n: 1 } });
    const again = await request(h, [Buffer.from('{"n":1}')]);
    expect(again.replayed).toBe(true);
    expect(JSON.parse(again.body)).toEqual({ runs: 1, echo: { n: 1 } });
    expect(runs).toBe(1);
  });

  it('plain JSON route (no preParsing): a reset mid-body whose cut still parses ({"a":1} then spaces) runs nothing; the whole retry runs once', async () => {
    let runs = 0;
    let parsed = 0;
    const { session, request } = await h2((app) => {
      app.addHook('preValidation', async () => {
        parsed++;
      });
      app.post('/u', async (req) => ({ runs: ++runs, a: (req.body as { a: number }).a }));
    });
    const body = Buffer.from(`{"a":1}${' '.repeat(90_000)}`);
    const h = { 'content-type': 'application/json', 'idempotency-key': 'json-rst' };
    for (const declared of [false, true]) {
      const stream = session.request({
        ':method': 'POST',
        ':path': '/u',
        ...h,
        ...(declared ? { 'content-length': String(body.length) } : {}),
      });
      stream.on('error', () => {});
      stream.write(body.subarray(0, 40_000));
      await sleep(100);
      stream.destroy();
      await once(stream, 'close');
      await sleep(100);
    }
    // The cut without a declared length parsed (Fastify went on to preValidation)...
    expect(parsed).toBeGreaterThanOrEqual(1);
    // ... yet nothing ran or was recorded.
    expect(runs).toBe(0);
    const ok = await request(h, [body]);
    expect(ok.status).toBe(200);
    expect(ok.replayed).toBe(false);
    expect(JSON.parse(ok.body)).toEqual({ runs: 1, a: 1 });
  });

  it('piped 413 and 408: the answer arrives, then the stream is closed (the upload stops) and the session serves a next request', async () => {
    let runs = 0;
    const setup = (app: H2App) => {
      app.addHook('preParsing', async (_r, _re, payload) => payload.pipe(new PassThrough()));
      app.addContentTypeParser('application/x-upload', (_r, payload, done) => done(null, payload));
      app.post('/u', async (req) => {
        for await (const _ of req.body as Readable);
        return { runs: ++runs };
      });
    };
    const { request } = await h2(setup, { maxBodyBytes: 20_000, bodyTimeoutMs: 300 });
    const over = await request(up('h2-413'), [Buffer.alloc(30_000, 1)], true);
    expect(over.status).toBe(413);
    expect(over.closedMidUpload).toBe(true);
    expect(over.rstCode).toBe(0);
    const late = await request(up('h2-408'), [Buffer.alloc(5_000, 2)], true);
    expect(late.status).toBe(408);
    expect(late.closedMidUpload).toBe(true);
    expect(late.rstCode).toBe(0);
    const ok = await request(up('h2-ok'), [Buffer.alloc(5_000, 3)]);
    expect(ok.status).toBe(200);
    expect(runs).toBe(1);
  });

  it('pulled 413 (body left to the route): the answer arrives, then the stream is closed', async () => {
    let runs = 0;
    const { request } = await h2(
      (app) => {
        app.addContentTypeParser('application/x-upload', (_r, payload, done) =>
          done(null, payload),
        );
        app.post('/u', async (req) => {
          for await (const _ of req.body as Readable);
          return { runs: ++runs };
        });
      },
      { maxBodyBytes: 20_000 },
    );
    const over = await request(up('h2-pull-413'), [Buffer.alloc(30_000, 4)], true);
    expect(over.status).toBe(413);
    expect(over.closedMidUpload).toBe(true);
    const ok = await request(up('h2-pull-ok'), [Buffer.alloc(5_000, 5)]);
    expect(ok.status).toBe(200);
    expect(runs).toBe(1);
  });

  it('a streaming route: an empty body (END_STREAM on HEADERS), content-length: 0 and an empty DATA frame are one request (replays)', async () => {
    let runs = 0;
    const { request } = await h2((app) => {
      app.addContentTypeParser('application/x-upload', (_r, payload, done) => done(null, payload));
      app.post('/u', async (req) => {
        let size = 0;
        for await (const c of req.body as Readable) size += (c as Buffer).length;
        return { runs: ++runs, size };
      });
    });
    const first = await request(up('h2-empty'), []);
    expect(first.status).toBe(200);
    expect(JSON.parse(first.body)).toEqual({ runs: 1, size: 0 });
    const declared = await request({ ...up('h2-empty'), 'content-length': '0' }, []);
    expect(declared.replayed).toBe(true);
    const frame = await request(up('h2-empty'), [Buffer.alloc(0)]);
    expect(frame.replayed).toBe(true);
    expect((await request(up('h2-empty'), [Buffer.from('x')])).status).toBe(422);
    expect(runs).toBe(1);
  });
});

describe('HTTP/1', () => {
  it('an empty body without any framing header (HTTP/1.0-style POST) to a streaming route runs, then replays', async () => {
    let runs = 0;
    const { port } = await tapApp((app) => {
      app.addContentTypeParser('application/x-upload', (_r, payload, done) => done(null, payload));
      app.post('/u', async (req) => {
        for await (const _ of req.body as Readable);
        return { runs: ++runs };
      });
    });
    const ask = async () => {
      const socket: Socket = connect(port, '127.0.0.1');
      socket.on('error', () => {});
      await once(socket, 'connect');
      const got: Buffer[] = [];
      socket.on('data', (c: Buffer) => got.push(c));
      const closed = once(socket, 'close');
      socket.write(
        'POST /u HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/x-upload\r\nidempotency-key: bare\r\nConnection: close\r\n\r\n',
      );
      await Promise.race([closed, sleep(10_000)]);
      socket.destroy();
      return Buffer.concat(got).toString('latin1');
    };
    expect(await ask()).toMatch(/^HTTP\/1\.1 200/);
    expect(await ask()).toMatch(/idempotent-replayed: true/i);
    expect(runs).toBe(1);
  });

  it('after a pulled 413 a body that keeps coming (fast, past the drain time) has its connection closed; the drained bytes are not kept', async () => {
    const { port } = await tapApp(
      (app) => {
        app.addContentTypeParser('application/x-leave', (_r, _p, done) => done(null, undefined));
        app.post('/leave', async (req) => {
          for await (const _ of req.raw);
          return { ok: true };
        });
      },
      { maxBodyBytes: 1_000, bodyTimeoutMs: 300 },
    );
    const socket: Socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    await once(socket, 'connect');
    const got: Buffer[] = [];
    socket.on('data', (c: Buffer) => got.push(c));
    let closed = false;
    socket.on('close', () => {
      closed = true;
    });
    socket.write(
      head('/leave', { 'content-type': 'application/x-leave', 'idempotency-key': 'drain' }, 1e9),
    );
    const piece = Buffer.alloc(16_384, 7);
    let sent = 0;
    // Up to 10 s of writing 16 kB every 5 ms: the server closes well before.
    for (let i = 0; i < 2_000 && !closed; i++) {
      // Not once(socket, 'drain'): it rejects on the reset the close may bring.
      if (!socket.write(piece))
        await Promise.race([
          new Promise((resolve) => {
            socket.once('drain', resolve);
            socket.once('close', resolve);
          }),
          sleep(50),
        ]);
      sent += piece.length;
      await sleep(5);
    }
    socket.destroy();
    expect(Buffer.concat(got).toString('latin1')).toMatch(/^HTTP\/1\.1 413/);
    expect(closed).toBe(true);
    expect(sent).toBeGreaterThan(0);
  });
});
