import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import type { ServerType } from '@hono/node-server';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import type { Hono } from 'hono';
import type { HonoIdempotencyOptions } from '../src/index.js';
import { serveOnLoopback } from './keyed-post-support.js';

/** What a client saw of one POST /charges. */
export interface Answer {
  status: number;
  type: unknown;
  body: string;
  replayed: string | undefined;
  headers: Record<string, string | undefined>;
}

export function memoryOptions(extra: Partial<HonoIdempotencyOptions> = {}): HonoIdempotencyOptions {
  return {
    store: createMemoryStore(),
    scope: 'global',
    leaseMs: 300,
    onWarning: () => {},
    ...extra,
  };
}

let counter = 0;
export const keyOf = (name: string) => `rev33b-${name}-${process.pid}-${++counter}`;

/** Serves `app` on loopback under @hono/node-server; its base URL. */
export async function start(app: Hono, servers: ServerType[]): Promise<string> {
  return `http://127.0.0.1:${await serveOnLoopback(app, servers)}`;
}

/** The body as text, gunzipped when it says gzip (and has bytes). */
function decoded(bytes: Buffer, coding: string | null | undefined): string {
  return (coding === 'gzip' && bytes.length > 0 ? gunzipSync(bytes) : bytes).toString('latin1');
}

function problemType(type: string | null | undefined, body: string): unknown {
  return type?.startsWith('application/problem+json')
    ? (JSON.parse(body) as { type?: unknown }).type
    : undefined;
}

/** One POST over loopback HTTP (@hono/node-server), `headers` added; the body as sent (not decoded). */
export function overHttp(url: string, headers: Record<string, string> = {}, path = '/charges') {
  return async (key: string): Promise<Answer> => {
    const answer = await send(url, path, { key, body: { a: 1 }, headers, timeoutMs: 10_000 });
    const flat: Record<string, string | undefined> = {};
    for (const [name, value] of Object.entries(answer.headers))
      flat[name] = Array.isArray(value) ? value.join(', ') : value;
    const body = decoded(answer.body, flat['content-encoding']);
    return {
      status: answer.status,
      type: problemType(flat['content-type'], body),
      body,
      replayed: flat['idempotent-replayed'],
      headers: flat,
    };
  };
}

/** One POST through `app.fetch` directly (Bun, Deno, workers), the body read whole. */
export function viaFetch(app: Hono, headers: Record<string, string> = {}, path = '/charges') {
  return async (key: string): Promise<Answer> => {
    const response = await app.fetch(
      new Request(`http://idem.test${path}`, {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
        body: '{"a":1}',
      }),
    );
    const bytes = Buffer.from(await response.arrayBuffer());
    const body = decoded(bytes, response.headers.get('content-encoding'));
    const flat: Record<string, string | undefined> = {};
    response.headers.forEach((value, name) => {
      flat[name] = value;
    });
    return {
      status: response.status,
      type: problemType(response.headers.get('content-type'), body),
      body,
      replayed: flat['idempotent-replayed'],
      headers: flat,
    };
  };
}

/** Retries until the answer is not 409 (bounded: 200 tries). */
export async function settled(post: (key: string) => Promise<Answer>, key: string) {
  let last = await post(key);
  for (let i = 0; i < 200 && last.status === 409; i += 1) {
    await sleep(20);
    last = await post(key);
  }
  return last;
}

export const TRANSPORTS = ['@hono/node-server over HTTP', 'app.fetch directly'] as const;
export type Transport = (typeof TRANSPORTS)[number];

export async function poster(
  transport: Transport,
  app: Hono,
  servers: ServerType[],
  headers: Record<string, string> = {},
  path = '/charges',
) {
  return transport === 'app.fetch directly'
    ? viaFetch(app, headers, path)
    : overHttp(await start(app, servers), headers, path);
}

/** `POST /charges` on `app`: counts its runs, answers 201 after `ms` (300: past a 100 ms timeout). */
export function slowCharges(app: Hono, counts: { runs: number }, ms = 300): Hono {
  app.post('/charges', async (c) => {
    counts.runs += 1;
    await sleep(ms);
    return c.json({ runs: counts.runs }, 201);
  });
  return app;
}
