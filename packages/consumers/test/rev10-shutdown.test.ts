// Review round 10 (rev10a): shutdown and listener attacks on the consumers, on the real
// RabbitMQ, NATS and Redis. Findings are `it.fails` (they state the correct behaviour);
// attacks that held are plain `it`.
import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRedisStore } from '@idem/store-redis';
import amqp from 'amqplib';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream } from '../src/index.js';
import { AMQP_URL, amqpQueues, connectAmqp, redisBed, uniqueName } from './brokers.js';
import { silentableProxy, silentJetStream, within } from './silent-proxy.js';

const { redis, prefix } = redisBed('rev10a-consumers');
const queues = amqpQueues();

const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const childEntry = fileURLToPath(new URL('./rev10-child.ts', import.meta.url));

interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** ms from the child's `closed` line (or its start) to its exit; `Infinity` when it was killed. */
  exitAfterMs: number;
}

/** Runs rev10-child.ts; kills it after `limitMs` (then `exitAfterMs` is Infinity). */
function runChild(mode: string, queue: string, limitMs: number): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(
      process.execPath,
      ['--import', loader, childEntry, JSON.stringify({ mode, queue, prefix })],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, limitMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const closed = stdout
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { type: string; at: number })
        .find((e) => e.type === 'closed');
      resolve({
        code,
        signal,
        stdout,
        stderr,
        exitAfterMs: killed ? Number.POSITIVE_INFINITY : Date.now() - (closed?.at ?? Date.now()),
      });
    });
  });
}

describe('rev10a consumers: listeners and shutdown', () => {
  // FIXED (was FINDING MEDIUM): an async onMessage that rejects is an unhandled rejection: it kills the consumer process on every message.
  it('an async onMessage that rejects does not kill the consumer process (AMQP)', async () => {
    const queue = uniqueName('rev10a-async-report');
    queues.push(queue);
    const run = await runChild('async-report', queue, 20_000);
    // Expected: the report's rejection is ignored like a thrown error ("Errors it throws are
    // ignored"), the process lives on and exits 0. Observed: exit 1 within ~0.5 s with
    // "Error: the metrics backend is down" (Node's default for an unhandled rejection).
    expect(run.stderr).not.toContain('the metrics backend is down');
    expect(run.stdout).toContain('"alive"');
    expect(run.code).toBe(0);
  });

  // FIXED (was FINDING MEDIUM): after stop() and connection.close(), a message held for retryDelayMs keeps its timer: the process cannot exit for up to retryDelayMs (or 10 min for an in-progress duplicate).
  it('stop() then close: a process holding a failed message exits promptly', async () => {
    const queue = uniqueName('rev10a-held-shutdown');
    queues.push(queue);
    // The child's retryDelayMs is 60 s; it is killed at 25 s (its start, tsx compiling the
    // sources, took over 6 s at load 43: 8 s did not always reach its `closed`), well before
    // that timer would let it exit; `exitAfterMs` below says whether it exited promptly.
    const run = await runChild('held-shutdown', queue, 25_000);
    expect(run.stdout).toContain('"closed"');
    // Expected: exits within a couple of seconds of `closed` (stop nacks or drops what it
    // holds, or its timers are unref'd/cleared). Observed: still alive at 8 s (killed), the
    // 60 s hold timer of the failed message keeps the event loop up.
    expect(run.exitAfterMs).toBeLessThan(3_000);
  });

  // FIXED (was FINDING MEDIUM): consumer.stop(timeoutMs) awaits channel.cancel() unbounded: against a broker that went silent it never returns.
  it('AMQP: stop(500) returns within its bound when the broker has gone silent', async () => {
    const target = new URL(AMQP_URL);
    const proxy = await silentableProxy({
      host: target.hostname,
      port: Number(target.port || 5672),
    });
    const queue = uniqueName('rev10a-silent-stop');
    queues.push(queue);
    const url = new URL(AMQP_URL);
    url.port = String(proxy.port);
    const connection = await amqp.connect(url.href, { timeout: 5_000 });
    connection.on('error', () => undefined);
    const channel = await connection.createChannel();
    channel.on('error', () => undefined);
    try {
      await channel.assertQueue(queue, { durable: false });
      const consumer = await consumeAmqp({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        channel,
        queue,
        handler: async () => ({ ok: true }),
      });
      proxy.pause();
      const started = performance.now();
      // Expected: back within ~500 ms (the bound stop() documents). Observed: still pending
      // after 5 s: `await channel.cancel(consumerTag)` waits for a reply that never comes.
      const result = await within(consumer.stop(500), 5_000);
      expect(result).not.toBe('timeout');
      expect(performance.now() - started).toBeLessThan(2_000);
    } finally {
      await proxy.close();
      // amqplib's own close() waits for a close-ok that a dead socket never brings: bounded.
      await within(
        connection.close().catch(() => undefined),
        2_000,
      );
    }
  });

  it('held: JetStream stop(500) returns within its bound when NATS has gone silent', async () => {
    const { proxy, nc, stream, close } = await silentJetStream('rev10a-silent');
    try {
      const consumer = await consumeJetStream({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        consumer: await nc.jetstream().consumers.get(stream, 'c'),
        handler: async () => ({ ok: true }),
      });
      proxy.pause();
      const started = performance.now();
      const result = await within(consumer.stop(500), 5_000);
      expect(result).not.toBe('timeout');
      expect(performance.now() - started).toBeLessThan(2_000);
    } finally {
      await close();
    }
  });

  // FIXED (was FINDING LOW): stop(timeoutMs) takes any number: Infinity or a value past 2^31-1 ms fires at once (Node clamps it to 1 ms), so stop returns while a handler is still running; NaN/negative are not refused.
  it('stop(Infinity) waits for the message in flight (or a bad timeout is a typed error)', async () => {
    const connection = await connectAmqp();
    const queue = uniqueName('rev10a-stop-infinity');
    queues.push(queue);
    const channel = await connection.createChannel();
    try {
      await channel.assertQueue(queue, { durable: false });
      let finished = false;
      let started!: () => void;
      const running = new Promise<void>((resolve) => {
        started = resolve;
      });
      const consumer = await consumeAmqp({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        channel,
        queue,
        handler: async () => {
          started();
          await sleep(1_500);
          finished = true;
          return { ok: true };
        },
      });
      channel.sendToQueue(queue, Buffer.from('x'), { messageId: 'inf-1' });
      await within(running, 5_000);
      // Expected: stop(Infinity) ("wait as long as it takes") returns once the handler is
      // done, or refuses Infinity with InvalidInputError. Observed: it resolves at once
      // (setTimeout(resolve, Infinity) fires after 1 ms) with the handler still running.
      let threw = false;
      try {
        await within(consumer.stop(Number.POSITIVE_INFINITY), 5_000);
      } catch {
        threw = true;
      }
      expect(threw || finished).toBe(true);
      await within(consumer.stop(5_000), 6_000);
    } finally {
      await connection.close().catch(() => undefined);
    }
  });
});
