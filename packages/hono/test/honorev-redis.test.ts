import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { PROBLEM_TYPES } from '@idem/http';
import { createRedisStore } from '@idem/store-redis';
import { Hono } from 'hono';
import { stream } from 'hono/streaming';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { send, sleep } from './honorev-support.js';

// Adversarial review (honorev): two Hono servers ("processes") sharing one Redis, own key prefix.

const prefix = `honorev:${randomBytes(6).toString('hex')}:`;
const clients: Redis[] = [];
const servers: ServerType[] = [];
const ports: number[] = [];
let runs = 0;

beforeAll(async () => {
  for (let i = 0; i < 2; i++) {
    const client = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
    clients.push(client);
    const app = new Hono();
    app.use(
      idempotency({
        store: createRedisStore({ client, keyPrefix: prefix }),
        scope: (c) => ({ principal: c.req.header('x-tenant') ?? 'tenant-a' }),
        onWarning: () => {},
      }),
    );
    app.post('/quick', (c) => c.json({ quick: true }, 201));
    app.post('/quick-stream', (c) =>
      stream(c, async (out) => {
        await out.write('a');
        await out.write('b');
      }),
    );
    app.post('/charges', async (c) => {
      runs++;
      await sleep(300);
      return c.json({ run: runs, tenant: c.req.header('x-tenant') ?? null }, 201);
    });
    ports.push(
      await new Promise<number>((resolve) => {
        const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () =>
          resolve((server.address() as AddressInfo).port),
        );
        servers.push(server);
      }),
    );
  }
});

afterAll(async () => {
  await Promise.all(
    servers.map((s) => new Promise((resolve) => s.close(() => resolve(undefined)))),
  );
  const client = clients[0] as Redis;
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await client.unlink(...keys);
  } while (cursor !== '0');
  await Promise.all(clients.map((c) => c.quit()));
});

describe('honorev: two servers on one Redis', () => {
  it('12 concurrent duplicates spread over two servers: one execution, 409s in progress, then replays on both', async () => {
    const key = `honorev-redis-${Date.now()}`;
    const h = { 'content-type': 'application/json', 'idempotency-key': key };
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        send(ports[i % 2] as number, 'POST', '/charges', h, '{"a":1}'),
      ),
    );
    expect(answers.filter((a) => a.status === 201)).toHaveLength(1);
    const conflicts = answers.filter((a) => a.status === 409);
    expect(conflicts).toHaveLength(11);
    for (const a of conflicts) expect(JSON.parse(a.body).type).toBe(PROBLEM_TYPES.inProgress);
    const first = answers.find((a) => a.status === 201);
    for (const port of ports) {
      const replay = await send(port, 'POST', '/charges', h, '{"a":1}');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body).toBe(first?.body);
    }
    // Another tenant with the same key, through the other server: its own execution.
    const other = await send(
      ports[1] as number,
      'POST',
      '/charges',
      { ...h, 'x-tenant': 'B' },
      '{"a":1}',
    );
    expect(other.status).toBe(201);
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect(runs).toBe(2);
    // The same key with another body through either server: 422, nothing run.
    const reused = await send(ports[1] as number, 'POST', '/charges', h, '{"a":2}');
    expect(reused.status).toBe(422);
    expect(runs).toBe(2);
  });
});

describe('honorev: the outcome is stored before the response ends (Redis)', () => {
  it('a duplicate sent the moment the first response has ended is a replay, never a 409 (JSON and streamed, 10 rounds each)', async () => {
    for (const path of ['/quick', '/quick-stream']) {
      for (let i = 0; i < 10; i++) {
        const key = `honorev-ended-${path}-${i}-${Date.now()}`;
        const first = await send(ports[0] as number, 'POST', path, { 'idempotency-key': key });
        expect(first.status).toBe(path === '/quick' ? 201 : 200);
        // The other server: it only knows what Redis holds.
        const next = await send(ports[1] as number, 'POST', path, { 'idempotency-key': key });
        expect(next.status, `${path} round ${i}`).toBe(first.status);
        expect(next.headers['idempotent-replayed']).toBe('true');
        expect(next.body).toBe(first.body);
      }
    }
  });
});

describe('honorev: store unreachable', () => {
  it('a dead Redis: 503 store-unavailable with Retry-After and the handler not run; failOpen runs it unprotected', async () => {
    const dead = new Redis('redis://127.0.0.1:1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
    });
    dead.on('error', () => {});
    let deadRuns = 0;
    try {
      for (const failOpen of [false, true]) {
        const app = new Hono();
        app.use(
          idempotency({
            store: createRedisStore({ client: dead, keyPrefix: `${prefix}dead:` }),
            scope: 'global',
            failOpen,
            storeTimeoutMs: 500,
            onWarning: () => {},
          }),
        );
        app.post('/x', (c) => {
          deadRuns++;
          return c.json({}, 201);
        });
        const port = await new Promise<number>((resolve) => {
          const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () =>
            resolve((server.address() as AddressInfo).port),
          );
          servers.push(server);
        });
        const started = Date.now();
        const answer = await send(port, 'POST', '/x', { 'idempotency-key': 'honorev-dead' });
        expect(Date.now() - started).toBeLessThan(2_000);
        if (failOpen) {
          expect(answer.status).toBe(201);
          expect(deadRuns).toBe(1);
        } else {
          expect(answer.status).toBe(503);
          expect(Number(answer.headers['retry-after'])).toBeGreaterThanOrEqual(1);
          expect(JSON.parse(answer.body).type).toBe(PROBLEM_TYPES.storeUnavailable);
          expect(deadRuns).toBe(0);
        }
      }
    } finally {
      dead.disconnect();
    }
  });
});
