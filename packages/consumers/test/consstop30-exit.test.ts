// consstop30: a final write still retried in the background when a finite stop() resolves (a
// handler that ran while the store froze) does not keep the process alive: core retries it on
// unref'd timers, so a process that closes its connections after stop() exits by itself (the
// write then lost: the redelivery runs the handler again once the lease passed, as after a
// crash; README, stop()). Its retries last up to `maxHoldMs` (an hour by default): held by
// them, the child would outlive this test's bound by far.
import { type ChildProcess, fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startPrivateRedis } from '@idem/test-ledger';
import { describe, expect, it } from 'vitest';
import { amqpQueues, connectAmqp, uniqueName } from './brokers.js';
import { within } from './silent-proxy.js';

const queues = amqpQueues();
const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const entry = fileURLToPath(new URL('./consstop30-exit-child.ts', import.meta.url));

describe('consstop30: a final write still pending after a finite stop()', () => {
  it('does not keep the process alive once it closed its connections (maxHoldMs 1 h)', {
    timeout: 120_000,
  }, async () => {
    const server = await startPrivateRedis();
    const connection = await connectAmqp();
    const queue = uniqueName('consstop30-exit');
    queues.push(queue);
    const events: Array<Record<string, unknown>> = [];
    let child: ChildProcess | undefined;
    try {
      const channel = await connection.createConfirmChannel();
      await channel.assertQueue(queue, { durable: false });
      child = fork(
        entry,
        [JSON.stringify({ redisUrl: server.url, queue, prefix: `${uniqueName('consstop30')}:` })],
        { execArgv: ['--import', loader], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
      );
      const exited = new Promise<number | null>((resolve) => child?.once('exit', resolve));
      child.on('message', (event: Record<string, unknown>) => {
        events.push(event);
        if (event.type === 'ready') {
          channel.sendToQueue(queue, Buffer.from('{}'), { messageId: uniqueName('m') });
        }
        if (event.type === 'running') {
          // The handler runs: the store freezes before it returns, its final write fails.
          server.freeze();
          child?.send('frozen');
        }
      });
      // A child starts slowly on a loaded machine (14 s seen at load 24).
      expect(await within(exited, 100_000)).toBe(0);
      expect(events).toEqual([
        { type: 'ready' },
        { type: 'running' },
        { type: 'report', status: 'failed', code: 'STORE_UNAVAILABLE' },
        { type: 'closed', retriedAfterStop: true },
      ]);
    } finally {
      if (child && child.exitCode === null) child.kill('SIGKILL');
      server.thaw();
      await connection.close().catch(() => undefined);
      await server.stop();
    }
  });
});
