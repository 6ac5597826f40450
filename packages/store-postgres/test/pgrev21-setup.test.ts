import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL, randomName } from './pg-env.js';

/**
 * pgrev21: the set-up's first statement (`SET default_transaction_isolation`) answered just
 * before / just after `openMs`, or answered with an error, by a proxy that recognises it. The
 * sessions default to serializable (pool `options`), so a half-set-up connection used for a
 * statement would show it.
 */
const url = new URL(DATABASE_URL);
const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
afterAll(() => admin.end());

type Plan =
  | { kind: 'delay'; ms: number }
  | { kind: 'error'; severity: string; code: string }
  | { kind: 'pass' };

function errorFrame(severity: string, code: string): Buffer {
  const fields = Buffer.concat([
    Buffer.from(`S${severity}\0V${severity}\0C${code}\0Mpgrev21 refuses the set-up\0\0`),
  ]);
  const head = Buffer.alloc(5);
  head.write('E', 0);
  head.writeInt32BE(fields.length + 4, 1);
  const ready = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]);
  return Buffer.concat([head, fields, ready]);
}

async function setUpProxy(plans: Plan[]) {
  const sockets = new Set<Socket>();
  const state = { accepted: 0, open: 0 };
  const server = createServer((client) => {
    const plan = plans[state.accepted] ?? { kind: 'pass' };
    state.accepted++;
    state.open++;
    sockets.add(client);
    client.on('error', () => {});
    client.on('close', () => state.open--);
    const upstream = createConnection({ host: url.hostname, port: Number(url.port || 5432) });
    sockets.add(upstream);
    upstream.on('error', () => {});
    let delayUntil = 0;
    const held: Buffer[] = [];
    client.on('data', (chunk: Buffer) => {
      const isSet = chunk[0] === 0x51 && chunk.includes('default_transaction_isolation');
      if (isSet && plan.kind === 'error') {
        client.write(errorFrame(plan.severity, plan.code));
        if (plan.severity === 'FATAL') client.end();
        return;
      }
      if (isSet && plan.kind === 'delay') {
        delayUntil = Number.POSITIVE_INFINITY;
        setTimeout(() => {
          delayUntil = 0;
          for (const b of held.splice(0)) if (!client.destroyed) client.write(b);
        }, plan.ms);
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (delayUntil > 0) held.push(chunk);
      else client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const proxied = new URL(DATABASE_URL);
  proxied.hostname = '127.0.0.1';
  proxied.port = String((server.address() as { port: number }).port);
  return {
    url: proxied.toString(),
    state,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

async function scenario(plans: Plan[], openMs: number) {
  const proxy = await setUpProxy(plans);
  const app = randomName('pgrev21s');
  const hooks = { onConnect: 0, connect: 0, remove: 0 };
  const pool = new pg.Pool({
    connectionString: proxy.url,
    max: 1,
    application_name: app,
    options: '-c default_transaction_isolation=serializable',
    onConnect: () => {
      hooks.onConnect++;
    },
  } as pg.PoolConfig);
  pool.on('error', () => {});
  pool.on('connect', () => hooks.connect++);
  pool.on('remove', () => hooks.remove++);
  // The pool's one connection held: the statements go to the own connection only.
  const held = await pool.connect();
  const base = { ...hooks };
  const acceptedBefore = proxy.state.accepted;
  const rc = new RenewalConnection(pool, openMs, 2_000);
  const results: string[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    try {
      const { rows } = await rc.repeatable.query<{ iso: string }>({
        text: "SELECT current_setting('transaction_isolation') AS iso",
        query_timeout: openMs * 3,
      } as pg.QueryConfig);
      results.push(`${rows[0]?.iso} in ${Math.round(performance.now() - t0)}ms`);
    } catch (error) {
      results.push(`error ${(error as Error).message} in ${Math.round(performance.now() - t0)}ms`);
    }
  }
  const openings = proxy.state.accepted - acceptedBefore;
  held.release();
  await pool.end();
  await sleep(400);
  const left = Number(
    (
      await admin.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [app],
      )
    ).rows[0].n,
  );
  const open = proxy.state.open;
  proxy.close();
  return {
    results,
    openings,
    left,
    open,
    hooks: {
      onConnect: hooks.onConnect - base.onConnect,
      // Totals: the held pool client's included on both sides.
      connect: hooks.connect,
      remove: hooks.remove,
    },
  };
}

describe('pgrev21: the set-up SET answered late, in time, or with an error', () => {
  // plans[0] is the held pool connection; plans[1] the first own opening.
  for (const [name, plan, openMs] of [
    ['late by 150 ms past openMs', { kind: 'delay', ms: 550 }, 400],
    ['just past openMs', { kind: 'delay', ms: 405 }, 400],
    ['just before openMs', { kind: 'delay', ms: 360 }, 400],
    ['an ERROR answer', { kind: 'error', severity: 'ERROR', code: '42501' }, 400],
    ['a FATAL answer', { kind: 'error', severity: 'FATAL', code: '57P01' }, 400],
  ] as const) {
    it(`SET ${name}: no half-set-up connection used, statements settle, nothing left`, async () => {
      const r = await scenario([{ kind: 'pass' }, plan as Plan], openMs);
      console.log('pgrev21 setup', name, r);
      // Every answer that came is read committed (never the sessions' serializable).
      for (const line of r.results) expect(line).not.toMatch(/^serializable/);
      // The later statements run on a connection set up in full.
      expect(r.results[2]).toMatch(/^read committed/);
      // The pool's hooks hear only of connections set up in full, and of each removal.
      expect(r.hooks.connect).toBe(r.hooks.remove);
      expect(r.hooks.onConnect).toBeLessThanOrEqual(r.openings);
      expect(r.openings).toBeLessThanOrEqual(2);
      expect(r.left).toBe(0);
      expect(r.open).toBe(0);
    });
  }
});
