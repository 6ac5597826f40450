/**
 * Mutation audit (store-redis): `recommendedRedisOptions()` asks a Redis that is still loading
 * its data again every 100 ms (`maxLoadingRetryTime`), instead of ioredis's default of waiting
 * for the loading ETA Redis reports (up to 10 s). `loading-recovery.test.ts` restarts a real
 * Redis with a large data set, but there the client happened to connect after loading, or the
 * ETA was right, so it passed without the option too. Here a tiny RESP server on loopback
 * plays a Redis that is loading with an ETA of 5 s and finishes after 600 ms: the client must
 * be ready within a few hundred ms of that, not when the ETA says.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { recommendedRedisOptions } from '../src/index.js';

const LOADING_MS = 600;

/** Splits complete RESP arrays of bulk strings off `buffer`; returns the commands and the rest. */
function takeCommands(buffer: Buffer): { commands: string[][]; rest: Buffer } {
  const commands: string[][] = [];
  let at = 0;
  for (;;) {
    const start = at;
    const line = (from: number) => {
      const end = buffer.indexOf('\r\n', from);
      return end < 0 ? undefined : { text: buffer.toString('latin1', from, end), next: end + 2 };
    };
    const head = line(at);
    if (head === undefined || !head.text.startsWith('*'))
      return { commands, rest: buffer.subarray(start) };
    let next = head.next;
    const parts: string[] = [];
    let complete = true;
    for (let i = 0; i < Number(head.text.slice(1)); i++) {
      const size = line(next);
      if (!size) {
        complete = false;
        break;
      }
      const length = Number(size.text.slice(1));
      if (buffer.length < size.next + length + 2) {
        complete = false;
        break;
      }
      parts.push(buffer.toString('latin1', size.next, size.next + length));
      next = size.next + length + 2;
    }
    if (!complete) return { commands, rest: buffer.subarray(start) };
    commands.push(parts);
    at = next;
  }
}

const bulk = (text: string) => `$${Buffer.byteLength(text)}\r\n${text}\r\n`;

/** A server that answers INFO as a Redis loading until `loadedAt` (ETA 5 s), anything else +OK. */
function fakeLoadingRedis(loadedAt: () => number): Promise<{ server: Server; port: number }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (data) => {
      const { commands, rest } = takeCommands(Buffer.concat([pending, data]));
      pending = rest;
      for (const [name] of commands) {
        if (name?.toLowerCase() !== 'info') {
          socket.write('+OK\r\n');
          continue;
        }
        const loading = Date.now() < loadedAt();
        socket.write(
          bulk(
            loading
              ? '# Persistence\r\nloading:1\r\nloading_eta_seconds:5\r\n'
              : '# Server\r\nredis_version:7.0.15\r\n# Persistence\r\nloading:0\r\n',
          ),
        );
      }
    });
  });
  server.on('close', () => {
    for (const socket of sockets) socket.destroy();
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolve({ server, port: typeof address === 'object' && address ? address.port : 0 });
    });
  });
}

describe('mutaudit: a Redis still loading its data', () => {
  const closers: (() => void)[] = [];
  afterAll(() => {
    for (const close of closers) close();
  });

  it('the client is ready within a few hundred ms of loading ending, not after the ETA', async () => {
    let loadedAt = Number.POSITIVE_INFINITY;
    const { server, port } = await fakeLoadingRedis(() => loadedAt);
    closers.push(() => server.close());
    const client = new Redis({
      host: '127.0.0.1',
      port,
      ...recommendedRedisOptions(),
      lazyConnect: true,
    });
    closers.push(() => client.disconnect());
    client.on('error', () => undefined);
    const ready = new Promise<number>((resolve) => client.once('ready', () => resolve(Date.now())));
    loadedAt = Date.now() + LOADING_MS;
    void client.connect().catch(() => undefined);
    const readyAt = await Promise.race([
      ready,
      new Promise<number>((resolve) => setTimeout(() => resolve(Number.NaN), 8_000)),
    ]);
    expect(readyAt, 'never ready within 8 s').not.toBeNaN();
    // Asked again every 100 ms: ready within 100 ms of the end of loading, plus room for a
    // loaded machine (CI lanes at a load of 20 on two cores). ioredis's default would wait for
    // the 5 s ETA: 4.4 s past the end of loading.
    expect(readyAt - loadedAt).toBeLessThan(2_500);
    expect(readyAt).toBeGreaterThanOrEqual(loadedAt);
  });
});
