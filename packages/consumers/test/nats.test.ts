import { AckPolicy, headers, type NatsConnection } from 'nats';
import { afterAll, describe, it } from 'vitest';
import { connectNats, uniqueName } from './brokers.js';
import { expectExactlyOnce, killAndRedeliver } from './kill-harness.js';

const N = process.env.CI ? 40 : 120;

describe('NATS JetStream, real server', () => {
  // Connected inside the test, so that a missing server fails it (a failing beforeAll
  // would report it as skipped).
  let nc: NatsConnection | undefined;
  const streams: string[] = [];
  afterAll(async () => {
    if (!nc) return;
    const jsm = await nc.jetstreamManager();
    for (const stream of streams) await jsm.streams.delete(stream).catch(() => {});
    await nc.close();
  });

  it(`${N} messages, consumers SIGKILLed mid-message and before an ack: ${N} side effects, none twice, none lost`, async () => {
    nc = await connectNats();
    const stream = uniqueName('IDEM_TEST').replace(/-/g, '_');
    const subject = `${stream}.orders`;
    streams.push(stream);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: stream, subjects: [subject] });
    // Unacked messages come back after 1 s (the consumers say `working` while they run).
    await jsm.consumers.add(stream, {
      durable_name: 'workers',
      ack_policy: AckPolicy.Explicit,
      ack_wait: 1_000_000_000,
      max_deliver: -1,
    });
    const js = nc.jetstream();
    const summary = await killAndRedeliver(
      {
        target: { broker: 'nats', queue: stream, durable: 'workers' },
        async publish(ids) {
          for (const id of ids) {
            const h = headers();
            h.set('Nats-Msg-Id', id);
            await js.publish(subject, JSON.stringify({ id }), { headers: h });
          }
        },
        async leftover() {
          const info = await jsm.consumers.info(stream, 'workers');
          return info.num_pending + info.num_ack_pending;
        },
      },
      N,
    );
    console.log(`[consumers] NATS JetStream: ${JSON.stringify(summary)}`);
    expectExactlyOnce(summary, N);
  });
});
