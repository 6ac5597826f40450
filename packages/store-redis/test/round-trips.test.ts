import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect } from 'node:net';
import { createIdempotency, InProgressError } from '@idem/core';
import { Cluster, type Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { ACQUIRE_LUA, COMPLETE_LUA, EXTEND_LUA, GET_LUA, RELEASE_LUA } from '../src/scripts.js';
import { WRITE_BATCH_MAX } from '../src/write-batching.js';
import {
  type Client,
  deletePrefix,
  REDIS_URL,
  randomPrefix,
  skipTarget,
  standalone,
  targets,
} from './targets.js';

const sha = (lua: string) => createHash('sha1').update(lua).digest('hex');
const SCRIPT_NAMES = new Map([
  [sha(ACQUIRE_LUA), 'acquire'],
  [sha(COMPLETE_LUA), 'complete'],
  [sha(RELEASE_LUA), 'release'],
  [sha(EXTEND_LUA), 'extend'],
  [sha(GET_LUA), 'get'],
]);

/**
 * Records every command the client sends, naming our scripts by their SHA. ioredis sends
 * each command through `sendCommand`; a NOSCRIPT fallback would show up as a second one.
 */
function observe(client: Client): string[] {
  const sent: string[] = [];
  const original = client.sendCommand.bind(client) as (...args: unknown[]) => unknown;
  (client as unknown as { sendCommand: (...args: unknown[]) => unknown }).sendCommand = (
    ...args: unknown[]
  ) => {
    const command = args[0] as { name: string; args: unknown[] };
    const script = SCRIPT_NAMES.get(String(command.args[0]));
    sent.push(script ? `${command.name}:${script}` : command.name);
    return original(...args);
  };
  return sent;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

for (const target of targets) {
  describe.skipIf(skipTarget(target))(`round trips on ${target.name}`, () => {
    let client: Client;
    let raw: Client;
    let sent: string[];
    let store: RedisStore;
    const prefix = randomPrefix();

    beforeAll(async () => {
      client = await target.connect();
      raw = await target.connect();
      sent = observe(client);
      store = createRedisStore({ client, keyPrefix: prefix });
    });
    afterAll(async () => {
      await deletePrefix(raw, prefix);
      client?.disconnect();
      raw?.disconnect();
    });

    const scope = () => randomBytes(6).toString('hex');

    it('first execution = 2 (acquire + complete), replay = 1, in-progress conflict = 1', async () => {
      const idem = createIdempotency<{ n: number }>({ store, heartbeatMs: false });
      const request = { key: 'charge-1', scope: scope(), fingerprint: 'fp' };

      sent.length = 0;
      const first = await idem.execute(request, async () => ({ n: 1 }));
      expect(first).toEqual({ value: { n: 1 }, replayed: false });
      expect(sent).toEqual(['evalsha:acquire', 'evalsha:complete']);

      sent.length = 0;
      const replay = await idem.execute(request, async () => ({ n: 2 }));
      expect(replay).toEqual({ value: { n: 1 }, replayed: true });
      expect(sent).toEqual(['evalsha:acquire']);

      const busy = { key: 'charge-2', scope: scope(), fingerprint: 'fp' };
      const begun = await idem.begin(busy);
      expect(begun.kind).toBe('acquired');
      sent.length = 0;
      await expect(idem.execute(busy, async () => ({ n: 3 }))).rejects.toBeInstanceOf(
        InProgressError,
      );
      expect(sent).toEqual(['evalsha:acquire']);
      if (begun.kind === 'acquired') await begun.execution.release();
    });

    it('heartbeats add exactly one extend each', async () => {
      const idem = createIdempotency({ store, leaseMs: 1_200, heartbeatMs: 200 });
      sent.length = 0;
      await idem.execute({ key: 'slow', scope: scope() }, async () => {
        // Ends halfway between heartbeats (every 200 ms plus a round trip): at 800 ms the
        // fourth heartbeat raced the completion, and an extend could follow the complete.
        await sleep(700);
        return 'done';
      });
      const extends_ = sent.filter((c) => c === 'evalsha:extend').length;
      expect(extends_).toBeGreaterThanOrEqual(2);
      expect(sent).toEqual([
        'evalsha:acquire',
        ...Array(extends_).fill('evalsha:extend'),
        'evalsha:complete',
      ]);
    });

    it("the store's commands of one tick leave in one socket write per connection, at most WRITE_BATCH_MAX each", async () => {
      // A Cluster connects to each primary on first use: connect them all before counting.
      if (client instanceof Cluster) await Promise.all(client.nodes('master').map((n) => n.ping()));
      const writes = countSocketWrites(client);
      const idem = createIdempotency({ store, heartbeatMs: false });
      for (const calls of [WRITE_BATCH_MAX, 3 * WRITE_BATCH_MAX + 5]) {
        const requests = Array.from({ length: calls }, () => ({ key: 'k', scope: scope() }));
        const batches = Math.ceil(calls / WRITE_BATCH_MAX);
        writes.reset();
        const first = await Promise.all(requests.map((r) => idem.execute(r, async () => 1)));
        expect(first.every((r) => r.replayed === false)).toBe(true);
        // The acquires of one tick, then the completions of one tick: one write per
        // WRITE_BATCH_MAX commands each, per node (a Cluster flushes every primary at once).
        expect(writes.count).toBeGreaterThanOrEqual(2 * batches);
        expect(writes.count).toBeLessThanOrEqual(2 * batches * writes.connections);
        expect(writes.chunks).toBe(2 * calls);
        expect(writes.largest).toBeLessThanOrEqual(WRITE_BATCH_MAX);
        writes.reset();
        const again = await Promise.all(requests.map((r) => idem.execute(r, async () => 2)));
        expect(again.every((r) => r.replayed && r.value === 1)).toBe(true);
        expect(writes.count).toBeGreaterThanOrEqual(batches);
        expect(writes.count).toBeLessThanOrEqual(batches * writes.connections);
        expect(writes.chunks).toBe(calls);
        expect(writes.largest).toBeLessThanOrEqual(WRITE_BATCH_MAX);
        // One Redis: every batch but the last is full.
        if (!(client instanceof Cluster)) expect(writes.largest).toBe(WRITE_BATCH_MAX);
      }
      writes.restore();
    });
  });
}

/**
 * Counts the writes that reach the client's sockets (every primary's on a Cluster): a write
 * is one `_write` or `_writev` of the socket, `chunks` the commands in them.
 */
function countSocketWrites(client: Client) {
  const nodes = client instanceof Cluster ? client.nodes('master') : [client as Redis];
  const counter = { count: 0, chunks: 0, largest: 0, connections: nodes.length };
  const restores: Array<() => void> = [];
  for (const node of nodes) {
    const stream = node.stream as unknown as {
      _write(...args: unknown[]): void;
      _writev(chunks: unknown[], ...rest: unknown[]): void;
    };
    const { _write, _writev } = stream;
    stream._write = (...args) => {
      counter.count++;
      counter.chunks++;
      counter.largest = Math.max(counter.largest, 1);
      _write.apply(stream, args);
    };
    stream._writev = (chunks, ...rest) => {
      counter.count++;
      counter.chunks += chunks.length;
      counter.largest = Math.max(counter.largest, chunks.length);
      _writev.call(stream, chunks, ...rest);
    };
    restores.push(() => {
      stream._write = _write;
      stream._writev = _writev;
    });
  }
  return {
    get count() {
      return counter.count;
    },
    get chunks() {
      return counter.chunks;
    },
    /** The most commands one write carried. */
    get largest() {
      return counter.largest;
    },
    connections: counter.connections,
    reset() {
      counter.count = 0;
      counter.chunks = 0;
      counter.largest = 0;
    },
    restore() {
      for (const undo of restores) undo();
    },
  };
}

/**
 * A minimal MONITOR client on a raw socket. (ioredis's `monitor()` can fail with "Command
 * queue state error" on a busy server, when monitor lines arrive in the same chunk as the
 * MONITOR reply.) Collects, per client address, the commands the server executed.
 */
async function monitorServer(
  url: string,
): Promise<{ seen: Array<[string, string]>; close(): void }> {
  const { hostname, port, username, password } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port || 6379) });
  await once(socket, 'connect');
  const auth = password
    ? `AUTH ${[username, password].filter(Boolean).map(decodeURIComponent).join(' ')}\r\n`
    : '';
  socket.write(`${auth}MONITOR\r\n`);
  const seen: Array<[string, string]> = [];
  let buffered = '';
  let oks = auth ? -1 : 0;
  let started = false;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\r\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      if (line.startsWith('-')) throw new Error(`MONITOR failed: ${line}`);
      if (line === '+OK' && ++oks === 1) started = true;
      // +1795840424.527958 [0 127.0.0.1:55308] "evalsha" "..."
      const match = /^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]*)"/.exec(line);
      if (match) seen.push([match[1]!, match[2]!.toLowerCase()]);
    }
  });
  await vi.waitUntil(() => started, { timeout: 5_000 });
  return { seen, close: () => socket.destroy() };
}

describe('round trips seen by the server (MONITOR)', () => {
  let client: Redis;
  let monitor: Awaited<ReturnType<typeof monitorServer>>;
  const prefix = randomPrefix();

  beforeAll(async () => {
    client = (await standalone.connect()) as Redis;
    monitor = await monitorServer(REDIS_URL);
  });
  afterAll(async () => {
    monitor?.close();
    const raw = await standalone.connect();
    await deletePrefix(raw, prefix);
    raw.disconnect();
    client?.disconnect();
  });

  it('a first execution is two script calls from the client, a replay one', async () => {
    const store = createRedisStore({ client, keyPrefix: prefix });
    const idem = createIdempotency({ store, heartbeatMs: false });
    const address = `${client.stream.localAddress}:${client.stream.localPort}`;
    // Commands a script runs are reported with source "lua"; keep the client's own.
    const fromClient = () =>
      monitor.seen.filter(([source]) => source === address).map(([, c]) => c);
    // The first call on a connection is EVAL (ioredis loads the script), later ones EVALSHA.
    const scripts = (commands: string[]) => commands.map((c) => c.replace('evalsha', 'eval'));

    const request = { key: 'monitored', scope: randomBytes(6).toString('hex') };
    monitor.seen.length = 0;
    await idem.execute(request, async () => 'v');
    await client.echo('marker-1'); // once MONITOR shows it, everything before it was seen
    await expect.poll(() => fromClient().at(-1), { timeout: 5_000 }).toBe('echo');
    expect(scripts(fromClient().slice(0, -1))).toEqual(['eval', 'eval']);

    monitor.seen.length = 0;
    const replay = await idem.execute(request, async () => 'w');
    expect(replay).toEqual({ value: 'v', replayed: true });
    await client.echo('marker-2');
    await expect.poll(() => fromClient().at(-1), { timeout: 5_000 }).toBe('echo');
    expect(scripts(fromClient().slice(0, -1))).toEqual(['eval']);
  });
});
