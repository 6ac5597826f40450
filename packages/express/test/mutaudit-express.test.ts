import { once } from 'node:events';
import { connect } from 'node:net';
import { finalOnceStarted } from '@idem/http';
import { listening, send, spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Mutation audit of the README's guarantees (see the report of wt/mutx): each test here
// fails under one small change of @idem/http's Node response recorder that no earlier test
// noticed, and passes on the real code.

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let counter = 0;
const newKey = () => `mutaudit-${process.pid}-${Date.now()}-${++counter}`;

/** A promise with its resolve, to gate on what the route reached. */
function gate<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Resolves `promise`'s value, or `fallback` after `ms`. */
const within = <T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> =>
  Promise.race([promise, sleep(ms).then(() => fallback)]);

const spy = spyStore(createMemoryStore(), { completeDelayMs: 0 });
const runs = new Map<string, number>();
const ran = (name: string) => runs.set(name, (runs.get(name) ?? 0) + 1);
let running: Awaited<ReturnType<typeof listening>>;
let url = '';
let port = 0;

/** What the /left route saw after its client left. */
let leftClose = gate<boolean>();
/** The /drain route: write answered false (the client stopped reading), and its end. */
let drainWaitingSince: number | undefined;
let drainLeft = false;
let drainDone = gate<number>();

const DRAIN_CHUNK = Buffer.alloc(64 * 1024, 0x61);
/** Bound of the /drain route's writes (the socket asks to wait long before this). */
const DRAIN_MAX = 48 * 1024 * 1024;

beforeAll(async () => {
  const app = express();
  app.use(
    idempotency({
      store: spy.store,
      scope: () => ({ principal: 'tenant-a' }),
      maxBodyBytes: 64,
      maxOutcomeBytes: 64 * 1024 * 1024,
      onWarning: () => {},
    }),
  );
  app.use(express.json());
  app.post('/limit', (req, res) => {
    ran('limit');
    res.status(201).json({ got: req.body });
  });
  // The app reuses its buffer once `end` (or a `write` of the last declared bytes) returned,
  // as a pooled writer does: what the client gets must be the bytes as they were handed over.
  app.post('/reused-end', (_req, res) => {
    ran('reused-end');
    const buffer = Buffer.from('original body');
    res.status(201).type('text/plain');
    res.end(buffer);
    buffer.fill(0x78);
  });
  app.post('/reused-write', (_req, res) => {
    ran('reused-write');
    const buffer = Buffer.from('original body');
    res.status(201).type('text/plain').set('content-length', String(buffer.length));
    res.write(buffer);
    buffer.fill(0x78);
    res.end();
  });
  // The whole body written (its Content-Length reached) before the end: the client takes the
  // last byte for the end of the response, so it must not get it before the outcome is stored.
  app.post('/declared', async (_req, res) => {
    ran('declared');
    res.status(201).type('text/plain').set('content-length', '5');
    res.write('hello');
    await sleep(20);
    res.end();
  });
  // Streams on after its client left (the server saw its socket close), then ends: its
  // 'close' comes once it ended.
  app.post('/left', async (req, res) => {
    ran('left');
    const closed = gate<boolean>();
    res.on('close', () => closed.resolve(true));
    res.status(200).type('text/plain');
    res.write('first\n');
    for (let i = 0; i < 500 && !req.socket.destroyed; i++) await sleep(10);
    res.write('second\n');
    res.end('last\n');
    leftClose.resolve(await within(closed.promise, 3_000, false));
  });
  // Writes until the socket asks it to wait (its client does not read), waits for 'drain',
  // and again, until the test says the client left; then ends.
  app.post('/drain', async (_req, res) => {
    ran('drain');
    res.status(200).type('application/octet-stream');
    let written = 0;
    while (!drainLeft && written < DRAIN_MAX) {
      written += DRAIN_CHUNK.length;
      if (!res.write(DRAIN_CHUNK)) {
        drainWaitingSince = Date.now();
        await once(res, 'drain');
        drainWaitingSince = undefined;
      }
    }
    res.end('END');
    drainDone.resolve(written + 3);
  });
  running = await listening(app.listen(0, '127.0.0.1'));
  url = running.url;
  port = Number(new URL(url).port);
});
afterAll(() => running.close());

describe('@idem/express mutation audit: body cap, held bytes, the client gone', () => {
  it('takes a body of exactly maxBodyBytes (413 only past it)', async () => {
    const exact = Buffer.from(JSON.stringify({ pad: 'x'.repeat(54) }));
    expect(exact.length).toBe(64);
    const ok = await send(url, '/limit', {
      key: newKey(),
      body: exact,
      headers: { 'content-type': 'application/json' },
    });
    expect(ok.status).toBe(201);
    const over = Buffer.from(JSON.stringify({ pad: 'x'.repeat(55) }));
    const refused = await send(url, '/limit', {
      key: newKey(),
      body: over,
      headers: { 'content-type': 'application/json' },
    });
    expect(refused.status).toBe(413);
    expect(runs.get('limit')).toBe(1);
  });

  it.each([
    ['end(buffer)', '/reused-end'],
    ['write(buffer) of the declared length', '/reused-write'],
  ])(
    'sends the held bytes of %s as handed over, though the app reuses its buffer',
    async (_name, path) => {
      const key = newKey();
      const first = await send(url, path, { key, body: {} });
      expect([first.status, first.body.toString()]).toEqual([201, 'original body']);
      const replay = await send(url, path, { key, body: {} });
      expect([
        replay.status,
        replay.headers['idempotent-replayed'],
        replay.body.toString(),
      ]).toEqual([201, 'true', 'original body']);
    },
  );

  it('holds the last byte of a declared Content-Length until the outcome is stored', async () => {
    spy.faults.completeDelayMs = 300;
    try {
      const before = spy.completed.length;
      const first = await send(url, '/declared', { key: newKey(), body: {} });
      // The client saw the response end: by then the (slow) write must be done.
      expect([first.status, first.body.toString(), first.complete]).toEqual([201, 'hello', true]);
      expect(spy.completed.length).toBe(before + 1);
    } finally {
      spy.faults.completeDelayMs = 0;
    }
  });

  it("emits the held 'close' once the app ends the response its client left", async () => {
    leftClose = gate<boolean>();
    const key = newKey();
    const first = await send(url, '/left', { key, body: {}, leaveAfterBytes: 1 });
    expect(first.complete).toBe(false);
    expect(await within(leftClose.promise, 8_000, 'route never ended')).toBe(true);
    const replay = await send(url, '/left', { key, body: {} });
    expect([replay.status, replay.headers['idempotent-replayed'], replay.body.toString()]).toEqual([
      200,
      'true',
      'first\nsecond\nlast\n',
    ]);
    expect(runs.get('left')).toBe(1);
  });

  it("gives 'drain' to a writer waiting for it when the client leaves: the route ends, once", async () => {
    drainDone = gate<number>();
    drainLeft = false;
    const key = newKey();
    // A client that sends its request and then stops reading: the socket fills and the
    // route's write answers false. It leaves once the route has waited for 'drain' a while
    // (the socket's buffers stopped growing), so that the route waits when it leaves.
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.pause();
    socket.write(
      `POST /drain HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: "${key}"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
    );
    const deadline = Date.now() + 15_000;
    while (
      Date.now() < deadline &&
      (drainWaitingSince === undefined || Date.now() - drainWaitingSince < 300)
    )
      await sleep(20);
    expect(drainWaitingSince).toBeDefined();
    drainLeft = true;
    socket.destroy();
    const size = await within(drainDone.promise, 5_000, 'still waiting for drain');
    expect(typeof size).toBe('number');
    const replay = await send(url, '/drain', { key, body: {}, timeoutMs: 15_000 });
    expect([replay.status, replay.headers['idempotent-replayed']]).toEqual([200, 'true']);
    expect(replay.body.length).toBe(size);
    expect(replay.body.subarray(-3).toString()).toBe('END');
    expect(runs.get('drain')).toBe(1);
  });
});

describe('@idem/express mutation audit: answers before any route are never recorded', () => {
  let running: Awaited<ReturnType<typeof listening>>;
  let base = '';
  let created = 0;

  beforeAll(async () => {
    const app = express();
    // Every started response is final: only "not a route's outcome" keeps these unrecorded.
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: () => ({ principal: 'tenant-a' }),
        isFinal: finalOnceStarted,
        onWarning: () => {},
      }),
    );
    app.use(express.json({ limit: 20 }));
    app.use((req, res, next) => {
      if (req.get('x-auth') !== 'ok')
        return void res.status(401).json({ error: 'unauthenticated' });
      next();
    });
    app.post('/charges', (_req, res) => {
      created++;
      res.status(201).json({ id: created });
    });
    running = await listening(app.listen(0, '127.0.0.1'));
    base = running.url;
  });
  afterAll(() => running.close());

  it.each([
    ["an auth middleware's 401", '/charges', {}, {}],
    ["express.json()'s 413", '/charges', { pad: 'x'.repeat(40) }, { 'x-auth': 'ok' }],
    ["express.json()'s 415", '/charges', {}, { 'x-auth': 'ok', 'content-encoding': 'br2' }],
    ["Express's 404", '/nowhere', {}, { 'x-auth': 'ok' }],
  ] as const)(
    'releases the key of %s under finalOnceStarted: never replayed',
    async (_name, path, body, headers) => {
      const key = newKey();
      const first = await send(base, path, { key, body, headers });
      expect(first.status).toBeGreaterThanOrEqual(400);
      const again = await send(base, path, { key, body, headers });
      expect([again.status, again.headers['idempotent-replayed']]).toEqual([
        first.status,
        undefined,
      ]);
    },
  );
});
