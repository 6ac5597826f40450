import type { ChannelModel } from 'amqplib';
import { afterAll, describe, it } from 'vitest';
import { connectAmqp, uniqueName } from './brokers.js';
import { expectExactlyOnce, killAndRedeliver } from './kill-harness.js';

const N = process.env.CI ? 40 : 120;

describe('RabbitMQ (amqplib), real broker', () => {
  // Connected inside the test, so that a missing broker fails it (a failing beforeAll
  // would report it as skipped).
  let connection: ChannelModel | undefined;
  const queues: string[] = [];
  afterAll(async () => {
    if (!connection) return;
    const channel = await connection.createChannel();
    for (const queue of queues) await channel.deleteQueue(queue).catch(() => {});
    await connection.close();
  });

  it(`${N} messages, consumers SIGKILLed mid-message and before an ack: ${N} side effects, none twice, none lost`, async () => {
    connection = await connectAmqp();
    const queue = uniqueName('idem-test-q');
    queues.push(queue);
    const channel = await connection.createConfirmChannel();
    await channel.assertQueue(queue, { durable: false });
    const summary = await killAndRedeliver(
      {
        target: { broker: 'amqp', queue },
        async publish(ids) {
          for (const id of ids)
            channel.sendToQueue(queue, Buffer.from(JSON.stringify({ id })), { messageId: id });
          await channel.waitForConfirms();
        },
        async leftover() {
          return (await channel.checkQueue(queue)).messageCount;
        },
      },
      N,
    );
    console.log(`[consumers] RabbitMQ: ${JSON.stringify(summary)}`);
    expectExactlyOnce(summary, N);
    await channel.close();
  });
});
