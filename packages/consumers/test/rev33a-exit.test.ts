// rev33a (review of the consumers33 merge f9c5900d): once stop() resolved and the application
// closed its connections, nothing of the consumer's keeps the process alive (README, stop():
// "a process that closes its connections after stop() exits meanwhile, not an hour later at
// maxHoldMs"), even with a handler still running that has nothing of its own to wait for (a
// promise nothing resolves), and on JetStream a resend of its message held behind it. Its
// message can no longer be acked (the connection is closed): the broker redelivers it.
import { type ChildProcess, fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { REDIS_URL } from '@idem/test-ledger';
import { AckPolicy } from 'nats';
import { describe, expect, it } from 'vitest';
import { amqpQueues, connectAmqp, jetStreamBed, uniqueName } from './brokers.js';
import { within } from './silent-proxy.js';

const queues = amqpQueues();
const bed = jetStreamBed('rev33a-exit');
const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const entry = fileURLToPath(new URL('./rev33a-exit-child.ts', import.meta.url));

/** Runs the child with `config`, `onEvent` told of each event it sends; answers its exit code (or timeout). */
async function runChild(
  config: Record<string, unknown>,
  onEvent: (event: Record<string, unknown>) => void,
): Promise<{ code: number | null | 'timeout'; events: Array<Record<string, unknown>> }> {
  const events: Array<Record<string, unknown>> = [];
  let child: ChildProcess | undefined;
  try {
    child = fork(entry, [JSON.stringify({ redisUrl: REDIS_URL, ...config })], {
      execArgv: ['--import', loader],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const exited = new Promise<number | null>((resolve) => child?.once('exit', resolve));
    child.on('message', (event: Record<string, unknown>) => {
      events.push(event);
      onEvent(event);
    });
    // A child starts slowly on a loaded machine; the bound is far below maxHoldMs (1 h).
    return { code: await within(exited, 100_000), events };
  } finally {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  }
}

describe('rev33a: a handler still running after stop() does not keep the process alive', () => {
  it('RabbitMQ', { timeout: 120_000 }, async () => {
    const connection = await connectAmqp();
    try {
      const queue = uniqueName('rev33a-exit');
      queues.push(queue);
      const channel = await connection.createChannel();
      await channel.assertQueue(queue, { durable: false });
      const { code, events } = await runChild(
        { broker: 'amqp', queue, prefix: `${uniqueName('rev33a-exit')}:` },
        (event) => {
          if (event.type === 'ready')
            channel.sendToQueue(queue, Buffer.from('{}'), { messageId: uniqueName('m') });
        },
      );
      expect(events.map((e) => e.type)).toEqual(['ready', 'running', 'held', 'closed']);
      expect(code).toBe(0);
    } finally {
      await connection.close().catch(() => undefined);
    }
  });

  it('JetStream, a resend held behind the running handler', { timeout: 120_000 }, async () => {
    const { jsm, js, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const { code, events } = await runChild(
      { broker: 'jetstream', stream: name, prefix: `${uniqueName('rev33a-exit')}:` },
      (event) => {
        if (event.type === 'ready') void js.publish(`${name}.a`, 'same');
        if (event.type === 'running') void js.publish(`${name}.a`, 'same');
      },
    );
    expect(events.map((e) => e.type)).toEqual(['ready', 'running', 'held', 'closed']);
    expect(code).toBe(0);
  });
});
