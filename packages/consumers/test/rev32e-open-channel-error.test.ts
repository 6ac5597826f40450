// rev32e: the README's `openChannel` declares the queue on a channel it just created. A
// declaration the broker refuses (here PRECONDITION_FAILED: the queue exists with other
// arguments) closes that channel with an 'error' event; unheard (the consumer listens to the
// channel's 'error' only once openChannel has answered it), amqplib throws it inside its frame
// loop and tears down the whole connection: every channel on it, the application's publishers
// and every other consumer sharing it, at every attempt. The README's example now listens to
// the channel's 'error' before declaring; this test runs both forms on the real RabbitMQ.

import { createRedisStore } from '@idem/store-redis';
import amqp, { type ChannelModel } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { consumeAmqp } from '../src/index.js';
import { AMQP_URL, amqpQueues, connectAmqp, redisBed, uniqueName } from './brokers.js';

const queues = amqpQueues();
const bed = redisBed('rev32e-open-error');

/** Starts a consumer whose openChannel declares `queue` durable (it is not): refused. */
async function refusedStart(listenFirst: boolean) {
  const admin = await connectAmqp();
  const queue = uniqueName('rev32e-open-error');
  queues.push(queue);
  await (await admin.createChannel()).assertQueue(queue, { durable: false });
  await admin.close();
  // The application's one connection (as in the README), with a publisher channel on it.
  const shared: ChannelModel = await amqp.connect(AMQP_URL, { timeout: 5_000 });
  shared.on('error', () => {});
  let connectionClosed = false;
  shared.on('close', () => {
    connectionClosed = true;
  });
  const publisher = await shared.createChannel();
  publisher.on('error', () => {});
  const started = consumeAmqp({
    store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
    openChannel: async () => {
      const channel = await shared.createChannel();
      if (listenFirst) channel.on('error', () => {});
      await channel.assertQueue(queue, { durable: true }); // refused: inequivalent 'durable'
      return channel;
    },
    queue,
    handler: async () => 'ok',
  });
  await expect(started).rejects.toThrow(/PRECONDITION_FAILED|406/);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const publisherWorks = await publisher.checkQueue(queue).then(
    () => true,
    () => false,
  );
  const seen = { connectionClosed, publisherWorks };
  await shared.close().catch(() => undefined);
  return seen;
}

describe("rev32e: openChannel's declaration refused", () => {
  it('the channel listened to before declaring: only that channel closes, the shared connection and its publisher live on', {
    timeout: 20_000,
  }, async () => {
    expect(await refusedStart(true)).toEqual({ connectionClosed: false, publisherWorks: true });
  });

  it('(the hazard, as amqplib behaves) unheard, the refusal tears down the whole shared connection', {
    timeout: 20_000,
  }, async () => {
    expect(await refusedStart(false)).toEqual({ connectionClosed: true, publisherWorks: false });
  });
});
