import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { cors } from 'hono/cors';
import { describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev21 (rev10-cors, idem first): the CORS fields of the recorded response are replayed with
// it only to a retry from the Origin they were computed for: never a grant to another Origin.

function app(order: 'idem-first' | 'cors-first' = 'idem-first') {
  let runs = 0;
  const hono = new Hono();
  const guard = idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} });
  const allow = cors({
    origin: ['https://app.example', 'https://b.example'],
    credentials: true,
    exposeHeaders: ['idempotent-replayed'],
  });
  if (order === 'idem-first') hono.use(guard, allow);
  else hono.use(allow, guard);
  hono.post('/charges', (c) => {
    runs++;
    return c.json({ id: 1 }, 201);
  });
  const send = async (origin: string | undefined) => {
    const response = await hono.request('/charges', {
      method: 'POST',
      headers: {
        'idempotency-key': 'k-1',
        'content-type': 'application/json',
        ...(origin ? { origin } : {}),
      },
      body: '{}',
    });
    await response.arrayBuffer();
    const h = response.headers;
    return {
      status: response.status,
      replayed: h.get('idempotent-replayed') === 'true',
      allowOrigin: h.get('access-control-allow-origin'),
      credentials: h.get('access-control-allow-credentials'),
      expose: h.get('access-control-expose-headers'),
      vary: h.get('vary'),
    };
  };
  return { send, runs: () => runs };
}

describe('rev21 hono: CORS fields of a replay, cors() mounted after idem', () => {
  it('the same Origin gets the recorded grant; another Origin, or none, gets no grant', async () => {
    const { send, runs } = app();
    const first = await send('https://app.example');
    expect(first).toMatchObject({
      status: 201,
      allowOrigin: 'https://app.example',
      credentials: 'true',
    });
    const same = await send('https://app.example');
    expect(same).toMatchObject({
      status: 201,
      replayed: true,
      allowOrigin: 'https://app.example',
      credentials: 'true',
      expose: 'idempotent-replayed',
    });
    expect(same.vary?.toLowerCase()).toContain('origin');
    for (const origin of ['https://evil.example', 'https://APP.example', undefined]) {
      const other = await send(origin);
      expect(other, String(origin)).toMatchObject({
        status: 201,
        replayed: true,
        allowOrigin: null,
        credentials: null,
        expose: null,
      });
      expect(other.vary?.toLowerCase()).toContain('origin');
    }
    // Limit: an Origin cors() would allow, other than the first request's, gets no grant on
    // a replay (what cors() would answer it is not known without running it).
    expect((await send('https://b.example')).allowOrigin).toBeNull();
    expect(runs()).toBe(1);
  });

  it('a first request without Origin records no grant for a retry with one', async () => {
    const { send, runs } = app();
    expect((await send(undefined)).status).toBe(201);
    expect(await send('https://app.example')).toMatchObject({ replayed: true, allowOrigin: null });
    expect(runs()).toBe(1);
  });

  it('cors() first: every replay carries what cors() answers its own Origin, never the first one', async () => {
    const { send, runs } = app('cors-first');
    expect((await send('https://app.example')).allowOrigin).toBe('https://app.example');
    expect(await send('https://app.example')).toMatchObject({
      replayed: true,
      allowOrigin: 'https://app.example',
    });
    expect(await send('https://b.example')).toMatchObject({
      replayed: true,
      allowOrigin: 'https://b.example',
      credentials: 'true',
    });
    // What cors() itself answers an origin it refuses (Hono's sets Allow-Credentials anyway),
    // never the recorded grant.
    expect(await send('https://evil.example')).toMatchObject({ replayed: true, allowOrigin: null });
    expect(runs()).toBe(1);
  });
});
