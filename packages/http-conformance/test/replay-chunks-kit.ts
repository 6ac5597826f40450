/**
 * rev10: bounded memory of a replay, for the Node adapters whose replay goes through
 * `sendPrepared` (Express, Koa). A record keeps the chunk lengths and a replay sends the same
 * chunks: every chunk was written at once with `res.write`, without waiting for 'drain', so a
 * record of many small chunks (a token-by-token stream) replayed to a client that reads slowly
 * queued every chunk, with chunked framing, in the server. Imported from each adapter's
 * `rev10-replay-chunks.test.ts`, which hands it a server whose POST /stream route writes
 * `chunks` 1-byte chunks, honouring backpressure.
 *
 * Counted, not weighed: the client is a connection whose writes never complete (a Duplex
 * handed to the server), so nothing drains into a kernel buffer, and what the replay queued is
 * counted: bytes on the connection and objects alive (after a full collection) that are not
 * byte arrays (the write requests: four a chunk when every chunk is queued). 20,000 chunks
 * show it; the heap delta needed 1,000,000 (a loopback socket's kernel buffers took a few MB
 * of framing), 10 to 15 s a file. IDEM_REPLAY_CHUNKS sizes the run.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { queryObjects } from 'node:v8';
import { afterAll, describe, expect, it } from 'vitest';
import { settledCount } from '../../../scripts/heap-count.js';

const CHUNKS = Number(process.env.IDEM_REPLAY_CHUNKS ?? 20_000);

export interface ReplayChunksApp {
  server: Server;
  /** How many times the route ran. */
  runs(): number;
}

/** A keyed POST to /stream, with no body. */
const request = (key: string) =>
  `POST /stream HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`;

/**
 * Objects alive after full collections (scripts/heap-count.ts) that are not byte
 * arrays: what a response queues a write at a time (Node's write requests) shows here, while
 * the recorded chunks and their views do not.
 */
const liveObjects = (): Promise<number> =>
  settledCount(
    () => queryObjects(Object, { format: 'count' }) - queryObjects(Uint8Array, { format: 'count' }),
  );

/**
 * A client that sends `request` and does not read: a connection handed to `server` whose
 * writes never complete until `read()`, so what the server queues stays on it (a loopback
 * socket's kernel buffers would take a few MB first). `queued()` is its bytes waiting.
 */
function stalledClient(server: Server, request: string) {
  const held: (() => void)[] = [];
  const written: Buffer[] = [];
  let reading = false;
  const client = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(chunk);
      if (reading) callback();
      else held.push(callback);
    },
  });
  client.on('error', () => {});
  server.emit('connection', client);
  client.push(request);
  return {
    queued: () => client.writableLength,
    /** From now on, takes every write (the held ones first). */
    read() {
      reading = true;
      for (const callback of held.splice(0)) callback();
    },
    received: () => Buffer.concat(written),
    destroy: () => client.destroy(),
  };
}

/** Waits (bounded: 50 ms steps, 10 s) until `value()` reads the same twice running. */
async function untilSettled(value: () => number): Promise<number> {
  let last = value();
  for (let i = 0; i < 200; i++) {
    await sleep(50);
    const now = value();
    if (now === last) return now;
    last = now;
  }
  return last;
}

/** The two rev10 tests against `start(chunks)`'s server (closed after the file). */
export function replayChunksSuite(
  name: string,
  start: (chunks: number) => Promise<ReplayChunksApp>,
): void {
  const servers: Server[] = [];
  afterAll(async () => {
    for (const server of servers) server.closeAllConnections();
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  });
  const started = async () => {
    const app = await start(CHUNKS);
    servers.push(app.server);
    return app;
  };

  describe(`rev10 ${name}: a replay of many small chunks to a client that does not read`, () => {
    // FIXED (was FINDING MEDIUM): sendPrepared writes every recorded chunk at once without backpressure: a 1 MB record of 1-byte chunks replayed to a paused client queues 6 MB of chunked framing and ~0.4-0.9 GB of heap/RSS in the server (the first execution to the same client held 16 KB)
    it('the server holds about what it holds for the first execution, not every chunk at once', async () => {
      const { server, runs } = await started();
      const port = (server.address() as AddressInfo).port;
      // First execution, read in full, recorded.
      const first = await fetch(`http://127.0.0.1:${port}/stream`, {
        method: 'POST',
        headers: { 'idempotency-key': 'many-chunks' },
        signal: AbortSignal.timeout(60_000), // set-up, not a bound
      });
      expect((await first.arrayBuffer()).byteLength).toBe(CHUNKS);
      expect(runs()).toBe(1);

      const before = await liveObjects();
      const client = stalledClient(server, request('many-chunks'));
      // Let the replay go out as far as it goes (bounded wait).
      const queued = await untilSettled(client.queued);
      const kept = (await liveObjects()) - before;
      expect(runs()).toBe(1);
      // Checked (Node 20.20.2): with writeChunks put back to a res.write of every chunk at
      // once (the rev10 leak), 20,000 chunks queued 120,227 bytes (Express; Koa 120,204: each
      // chunk framed "1\r\nx\r\n") and kept 80,078 objects more alive (Koa 80,098; 77 and 128
      // without it): both fail. The fix queues one coalesced write (up to 64 KiB, framed once)
      // and waits for 'drain'. Bounds: under 2 bytes a chunk, a quarter of one object a chunk.
      expect(queued, JSON.stringify({ chunks: CHUNKS, queued })).toBeLessThan(2 * CHUNKS);
      expect(kept, JSON.stringify({ chunks: CHUNKS, kept })).toBeLessThan(CHUNKS / 4);

      // Once the client reads, the replay is the first response: chunked, marked, every byte.
      client.read();
      const ended = () => client.received().includes('\r\n0\r\n\r\n');
      for (let i = 0; i < 200 && !ended(); i++) await sleep(50);
      const raw = client.received();
      client.destroy();
      const headEnd = raw.indexOf('\r\n\r\n');
      const head = raw.subarray(0, headEnd).toString('latin1').toLowerCase();
      expect(head.startsWith('http/1.1 200')).toBe(true);
      expect(head).toContain('transfer-encoding: chunked');
      expect(head).toContain('idempotent-replayed: true');
      expect(head).not.toContain('content-length');
      let body = 0;
      let at = headEnd + 4;
      for (;;) {
        const lineEnd = raw.indexOf('\r\n', at);
        const size = Number.parseInt(raw.subarray(at, lineEnd).toString('latin1'), 16);
        if (size === 0) break;
        const data = raw.subarray(lineEnd + 2, lineEnd + 2 + size);
        expect(data.every((byte) => byte === 0x78)).toBe(true);
        body += size;
        at = lineEnd + 2 + size + 2;
      }
      expect(body).toBe(CHUNKS);
    }, 90_000);

    it('held: the same response for its first execution to a client that does not read stays bounded (backpressure)', async () => {
      const { server, runs } = await started();
      const client = stalledClient(server, request('first-paused'));
      const queued = await untilSettled(client.queued);
      client.destroy();
      expect(runs()).toBe(1);
      expect(queued).toBeLessThan(2 * CHUNKS);
    }, 30_000);
  });
}
