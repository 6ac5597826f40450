/**
 * Helpers of the redrev adversarial review: a TCP proxy that delays every chunk (a slow
 * network), bounded timing of a call, and a client of a test server with short bounds.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Socket, connect as tcpConnect } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';
import { recommendedRedisOptions } from '../src/index.js';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
export const token = () => randomBytes(12).toString('hex');

/** The command timeout of the redrev clients (short, so faults show quickly). */
export const COMMAND_TIMEOUT = 1_000;
/** Room for a loaded 2-core machine. */
export const SLACK = 1_500;

/** A client of 127.0.0.1:`port` with the recommended options and a 1 s command timeout, connected. */
export async function connectTo(port: number, extra: RedisOptions = {}): Promise<Redis> {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    ...recommendedRedisOptions({ commandTimeoutMs: COMMAND_TIMEOUT, maxReconnectDelayMs: 500 }),
    lazyConnect: true,
    ...extra,
  });
  client.on('error', () => {});
  await client.connect();
  return client;
}

export interface Settled<T> {
  ok: boolean;
  value?: T;
  error?: unknown;
  ms: number;
  hung?: boolean;
}

/** Runs `call`, gives up waiting after `boundMs` (then `hung`). */
export async function settle<T>(call: () => Promise<T>, boundMs: number): Promise<Settled<T>> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<Settled<T>>((resolve) => {
    timer = setTimeout(
      () => resolve({ ok: false, hung: true, ms: performance.now() - started }),
      boundMs,
    );
  });
  const run = call().then(
    (value) => ({ ok: true, value, ms: performance.now() - started }),
    (error: unknown) => ({ ok: false, error, ms: performance.now() - started }),
  );
  const result = await Promise.race([run, hung]);
  clearTimeout(timer);
  return result;
}

export interface DelayProxy {
  readonly port: number;
  /** One-way delay added to every chunk in each direction, ms (order kept). */
  delayMs: number;
  close(): Promise<void>;
}

/** A loopback TCP proxy that holds every chunk `delayMs` before passing it on, in order. */
export async function startDelayProxy(upstreamPort: number, delayMs: number): Promise<DelayProxy> {
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const state = { delayMs };
  const pipe = (from: Socket, to: Socket) => {
    let last = 0;
    from.on('data', (chunk) => {
      // Never before the previous chunk: order is kept whatever the delay does.
      const at = Math.max(Date.now() + state.delayMs, last);
      last = at;
      setTimeout(() => {
        if (!to.destroyed) to.write(chunk);
      }, at - Date.now());
    });
    from.once('close', () => setTimeout(() => to.destroy(), Math.max(0, last - Date.now())));
  };
  const server = createServer((client) => {
    track(client);
    const upstream = tcpConnect({ host: '127.0.0.1', port: upstreamPort });
    track(upstream);
    pipe(client, upstream);
    pipe(upstream, client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('proxy has no port');
  return {
    port: address.port,
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(ms: number) {
      state.delayMs = ms;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Commands ioredis holds for a client: sent and unanswered, queued offline, kept for resend. */
export function queued(client: Redis): number {
  const c = client as unknown as {
    commandQueue: { length: number };
    offlineQueue: { length: number };
    prevCommandQueue?: { length: number } | null;
  };
  // Right after a close, prevCommandQueue is the very deque commandQueue was: count it once.
  const prev =
    c.prevCommandQueue && c.prevCommandQueue !== c.commandQueue ? c.prevCommandQueue.length : 0;
  return c.commandQueue.length + c.offlineQueue.length + prev;
}

export interface LossyProxy {
  readonly port: number;
  readonly lost: number;
  readonly connections: number;
  /**
   * The next answer from Redis is swallowed and that connection closed (the request was
   * applied, its answer lost); connections accepted in the next `holdMs` reach Redis only
   * once `holdMs` passed (their bytes are kept, then sent in order), so something else can
   * happen in Redis before ioredis's resend lands.
   */
  loseNextAnswer(holdMs?: number): void;
  close(): Promise<void>;
}

export async function startLossyProxy(upstreamPort: number): Promise<LossyProxy> {
  let armed = 0;
  let holdMs = 0;
  let holdUntil = 0;
  let lost = 0;
  let connections = 0;
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const server = createServer((client) => {
    connections++;
    track(client);
    const pending: Buffer[] = [];
    let upstream: Socket | undefined;
    client.on('data', (chunk) => {
      if (upstream) upstream.write(chunk);
      else pending.push(chunk);
    });
    const open = () => {
      if (client.destroyed) return;
      const up = tcpConnect({ host: '127.0.0.1', port: upstreamPort });
      track(up);
      upstream = up;
      for (const chunk of pending) up.write(chunk);
      pending.length = 0;
      up.on('data', (chunk) => {
        if (armed > 0) {
          armed--;
          lost++;
          holdUntil = Date.now() + holdMs;
          client.destroy();
          up.destroy();
          return;
        }
        client.write(chunk);
      });
      client.once('close', () => up.destroy());
      up.once('close', () => client.destroy());
    };
    const wait = holdUntil - Date.now();
    if (wait > 0) setTimeout(open, wait);
    else open();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('proxy has no port');
  return {
    port: address.port,
    get lost() {
      return lost;
    },
    get connections() {
      return connections;
    },
    loseNextAnswer(hold = 0) {
      armed++;
      holdMs = hold;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}
