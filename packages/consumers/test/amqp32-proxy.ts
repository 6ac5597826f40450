import net from 'node:net';
import type { IdempotencyStore } from '@idem/core';
import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { type AmqpConsumerOptions, type ConsumerStatus, consumeAmqp } from '../src/index.js';
import { AMQP_URL, connectAmqp, uniqueName } from './brokers.js';

/**
 * A TCP proxy on a free loopback port to the shared RabbitMQ (which is never restarted or
 * reconfigured): `cut()` destroys every connection through it (a connection lost), `refuse`
 * closes each new one at once (a broker unreachable), `dropUpstream` forwards nothing the
 * client sends (an ack lost on the wire), `stormMs` cuts each new connection that long after
 * it opened (a link that keeps failing).
 */
export async function amqpProxy() {
  const target = new URL(AMQP_URL);
  const settings = { refuse: false, dropUpstream: false, stormMs: 0 };
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted += 1;
    client.on('error', () => undefined);
    if (settings.refuse) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port || 5672), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (d) => {
      if (!settings.dropUpstream) upstream.write(d);
    });
    upstream.on('data', (d) => client.write(d));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    if (settings.stormMs > 0) {
      const timer = setTimeout(() => {
        // The storm ended meanwhile (stormMs back to 0): the link holds from then on. A cut
        // armed during the storm landing after it (a loaded CI lane: the consumer had resumed
        // on that connection and run its message) made "recovers once the link holds" flaky.
        if (settings.stormMs === 0) return;
        client.destroy();
        upstream.destroy();
      }, settings.stormMs);
      client.on('close', () => clearTimeout(timer));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `amqp://${target.username || 'guest'}:${target.password || 'guest'}@127.0.0.1:${port}`,
    settings,
    accepted: () => accepted,
    cut() {
      for (const s of sockets) s.destroy();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * An `openChannel` as an application writes it: a connection made once (again after it
 * closed), a channel on it per call. Records every call, every channel it answered (and which
 * were closed since), and the prefetch each was given.
 */
export function channelOpener(url: string) {
  let connection: ChannelModel | undefined;
  const connections: ChannelModel[] = [];
  const log = {
    calls: 0,
    channels: [] as Channel[],
    closed: new Set<Channel>(),
    prefetches: [] as number[],
  };
  const open = async (): Promise<Channel> => {
    log.calls += 1;
    if (connection === undefined) {
      // (The socket's time limit while it connects: 10 s, the consumer's own limit of an
      // attempt. At 2 s, a handshake a loaded machine held up failed the attempt, and the
      // consumer's next one made a call more than the reconnect tests count.)
      const made = await amqp.connect(url, { timeout: 10_000 });
      made.on('error', () => undefined);
      made.on('close', () => {
        if (connection === made) connection = undefined;
      });
      connection = made;
      connections.push(made);
    }
    const channel = await connection.createChannel();
    log.channels.push(channel);
    channel.on('close', () => log.closed.add(channel));
    const prefetch = channel.prefetch.bind(channel);
    channel.prefetch = ((count: number, global?: boolean) => {
      log.prefetches.push(count);
      return prefetch(count, global);
    }) as never;
    return channel;
  };
  return {
    open,
    log,
    /** The channels answered that have not emitted `close`. */
    openChannels: () => log.channels.filter((c) => !log.closed.has(c)),
    async closeAll() {
      for (const c of connections) await c.close().catch(() => undefined);
    },
  };
}

/**
 * A queue of the test's own (named from `label`, recorded in `queues` for the file's clean-up),
 * a direct connection to publish with, a proxy and an opener through it; `close()` ends them.
 */
export async function reconnectBench(queues: string[], label: string) {
  const admin = await connectAmqp();
  const publisher = await admin.createChannel();
  const queue = uniqueName(label);
  queues.push(queue);
  await publisher.assertQueue(queue, { durable: false });
  const proxy = await amqpProxy();
  const opener = channelOpener(proxy.url);
  return {
    publisher,
    queue,
    proxy,
    opener,
    publish: (messageId: string) => publisher.sendToQueue(queue, Buffer.from('a'), { messageId }),
    /**
     * A consumer of the queue through the proxy (`openChannel`: the opener), on `store`, with
     * `options`; by default its handler records each message's id in `runs` and its statuses
     * go to `statuses`.
     */
    async start(
      store: IdempotencyStore,
      options: Partial<AmqpConsumerOptions<ConsumeMessage, string>> = {},
    ) {
      const runs: string[] = [];
      const statuses: ConsumerStatus[] = [];
      const consumer = await consumeAmqp<ConsumeMessage, string>({
        openChannel: opener.open,
        queue,
        store,
        handler: async (message) => {
          runs.push(message.properties.messageId);
          return 'ok';
        },
        onConsumerStatus: (s) => statuses.push(s),
        ...options,
      });
      return { consumer, runs, statuses, types: () => statuses.map((s) => s.type) };
    },
    async close() {
      await opener.closeAll();
      await proxy.close();
      await admin.close();
    },
  };
}

export type { Channel };
