import type { ChannelModel } from 'amqplib';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { connectAmqp, uniqueName } from './brokers.js';
import { expectExactlyOnce, killAndRedeliver } from './kill-harness.js';

const N = process.env.CI ? 40 : 120;

describe('RabbitMQ (amqplib), real broker', () => {
  let connection: ChannelModel;
  const queues: string[] = [];
  beforeAll(async () => {
    connection = await connectAmqp();
  });
  afterAll(async () => {
    const channel = await connection.createChannel();
    for (const queue of queues) await channel.deleteQueue(queue).catch(() => {});
    await connection.close();
  });

  it(`${N} messages, consumers SIGKILLed mid-message and before an ack: ${N} side effects, none twice, none lost`, async () => {
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
