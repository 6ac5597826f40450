import type { ChannelModel } from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectAmqp, uniqueName } from './brokers.js';
import { killAndRedeliver } from './kill-harness.js';

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
    expect(summary.ledgerEntries).toBe(N);
    // Every side effect committed once: no stale or repeated write reached the ledger.
    expect(summary.ledger).toEqual({ written: N, replaced: 0, stale: 0 });
    // One message ran twice: the one whose consumer was killed before its side effect.
    expect(summary.rerun).toEqual([summary.killedInHandler]);
    expect(summary.handlerRuns).toBe(N + 1);
    // The message recorded but never acked came back and was acked without running.
    expect(summary.afterBeforeAckKill).toContain('replayed');
    expect(summary.afterBeforeAckKill).not.toContain('processed');
    expect(summary.leftover).toBe(0);
    await channel.close();
  });
});
