import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { idempotency } from '../src/index.js';

// Helpers of the fastify-tap-review tests: real servers on 127.0.0.1 and a raw HTTP/1.1
// client that controls how the bytes go out (split points, delays, pipelining).

export const AMOUNT = '{"amount":9007199254740993}';
export const OTHER_AMOUNT = '{"amount":9007199254740992}';

export interface TapApp {
  app: FastifyInstance;
  store: ReturnType<typeof createMemoryStore>;
  url: string;
  port: number;
}

const apps: FastifyInstance[] = [];

/** Closes every app {@link tapApp} started (for the test file's afterAll). */
export async function closeTapApps(): Promise<void> {
  await Promise.all(apps.splice(0).map((app) => app.close()));
}

/** A Fastify app with the plugin (global scope, memory store), listening on 127.0.0.1. */
export async function tapApp(
  setup: (app: FastifyInstance) => void | Promise<void>,
  options: {
    fastify?: FastifyServerOptions;
    maxBodyBytes?: number;
    bodyTimeoutMs?: number;
    plugin?: boolean;
    before?: (app: FastifyInstance) => void | Promise<void>;
  } = {},
): Promise<TapApp> {
  const app = Fastify(options.fastify ?? {});
  apps.push(app);
  const store = createMemoryStore();
  await options.before?.(app);
  if (options.plugin !== false) {
    await app.register(idempotency, {
      store,
      scope: 'global',
      onWarning: () => {},
      ...(options.maxBodyBytes === undefined ? {} : { maxBodyBytes: options.maxBodyBytes }),
      ...(options.bodyTimeoutMs === undefined ? {} : { bodyTimeoutMs: options.bodyTimeoutMs }),
    });
  }
  await setup(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { app, store, url: `http://127.0.0.1:${port}`, port };
}

export function postJson(url: string, key: string | undefined, body: BodyInit, headers = {}) {
  return fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key === undefined ? {} : { 'idempotency-key': key }),
      ...headers,
    },
    body,
  });
}

/** The head of a request with a body of `length` bytes (or chunked when undefined). */
export function head(
  path: string,
  headers: Record<string, string>,
  length: number | undefined,
  close = false,
): string {
  const lines = [`POST ${path} HTTP/1.1`, 'Host: 127.0.0.1'];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  lines.push(length === undefined ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`);
  if (close) lines.push('Connection: close');
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** A whole request with a Content-Length. */
export function rawPost(
  path: string,
  headers: Record<string, string>,
  body: string,
  close = false,
): string {
  return head(path, headers, Buffer.byteLength(body), close) + body;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Writes `steps` on one connection (a number is a pause in ms), then reads until the server
 * closes it (the last request should carry `Connection: close`) or `timeoutMs` passes, and
 * parses the responses in order.
 */
export async function rawExchange(
  port: number,
  steps: (string | Uint8Array | number)[],
  timeoutMs = 5000,
): Promise<RawResponse[]> {
  const socket = connect(port, '127.0.0.1');
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  for (const step of steps) {
    if (typeof step === 'number') await sleep(step);
    else socket.write(step);
  }
  await Promise.race([closed, sleep(timeoutMs)]);
  socket.destroy();
  return parseResponses(Buffer.concat(received));
}

function parseResponses(data: Buffer): RawResponse[] {
  const out: RawResponse[] = [];
  let offset = 0;
  while (offset < data.length) {
    const end = data.indexOf('\r\n\r\n', offset);
    if (end < 0) break;
    const [statusLine, ...lines] = data.subarray(offset, end).toString('latin1').split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    let at = end + 4;
    let body: Buffer;
    if (headers['transfer-encoding'] === 'chunked') {
      const parts: Buffer[] = [];
      for (;;) {
        const lineEnd = data.indexOf('\r\n', at);
        const size = Number.parseInt(data.subarray(at, lineEnd).toString('latin1'), 16);
        at = lineEnd + 2;
        if (!size) {
          at += 2;
          break;
        }
        parts.push(data.subarray(at, at + size));
        at += size + 2;
      }
      body = Buffer.concat(parts);
    } else {
      const length = Number(headers['content-length'] ?? 0);
      body = data.subarray(at, at + length);
      at += length;
    }
    out.push({ status: Number(statusLine!.split(' ')[1]), headers, body: body.toString('utf8') });
    offset = at;
  }
  return out;
}

/**
 * Bytes of the plugin's body copy that a Fastify request holds (0 when it holds none). The
 * copy hangs off the request's `@idem/fastify incoming` slot, as `tap.parts`.
 */
export function heldCopyBytes(request: object): number {
  const symbol = Object.getOwnPropertySymbols(request).find(
    (s) => s.description === '@idem/fastify incoming',
  );
  if (!symbol) throw new Error('the request carries no @idem/fastify slot');
  const slot = (request as Record<symbol, { tap?: unknown } | false | null>)[symbol];
  if (!slot) return 0;
  if (!('tap' in slot)) throw new Error('the request slot has no tap field');
  const tap = slot.tap;
  if (tap === undefined || tap === 'over') return 0;
  const { parts } = tap as { parts: Uint8Array[] };
  if (!Array.isArray(parts)) throw new Error('the copy has no parts');
  return parts.reduce((size, part) => size + part.length, 0);
}
