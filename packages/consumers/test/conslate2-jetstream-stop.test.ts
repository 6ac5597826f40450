// conslate2: a JetStream stop(timeoutMs) that returns before the broker answered the pull's
// drain, in a process that then closes its connection and exits (the usual shutdown). What
// was given back once stopped (messages whose key function was still pending: their handler
// never started) waited to be `nak`ed until the drain ended, which never happened: each came
// back only at `ack_wait` (30 s here). Now stop() ends the pull at its deadline and `nak`s
// them: they come back at once, and run once. The consumer's connection goes through a proxy
// of the test's that delays what the broker sends by 1 s, so the drain cannot end in stop(50).
import { type ChildProcess, fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { durableStream, jetStreamBed, NATS_URL } from './brokers.js';
import { until } from './late-store.js';
import { silentableProxy, within } from './silent-proxy.js';

const bed = jetStreamBed('conslate2-js');
const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const entry = fileURLToPath(new URL('./conslate2-child.ts', import.meta.url));

describe('conslate2: JetStream stop(timeoutMs) shorter than the drain, then the process exits', () => {
  it('what was given back once stopped is naked before stop() returns: redelivered at once (ack_wait 30 s), run once', {
    timeout: 150_000,
  }, async () => {
    const stream = await durableStream(bed.nc, 'CONSLATE2', bed.streams, {
      ackWaitMs: 30_000,
      count: 2,
    });
    const target = new URL(NATS_URL.replace(/^nats:/, 'http:'));
    const proxy = await silentableProxy(
      { host: target.hostname, port: Number(target.port || 4222) },
      { downstreamDelayMs: 1_000 },
    );
    const events: Array<Record<string, unknown>> = [];
    let child: ChildProcess | undefined;
    try {
      child = fork(
        entry,
        [JSON.stringify({ stream, prefix: bed.prefix, port: proxy.port, stopMs: 50 })],
        { execArgv: ['--import', loader], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
      );
      const exited = new Promise<number | null>((resolve) => child?.once('exit', resolve));
      child.on('message', (event: Record<string, unknown>) => events.push(event));
      // A child starts slowly on a loaded machine (14 s seen at load 24).
      expect(await within(exited, 100_000)).toBe(0);
      // Both messages waited for their key: given back once stopped, never run.
      const given = { type: 'report', status: 'failed', code: 'HANDLER_NOT_STARTED' };
      expect(events).toEqual([given, given, { type: 'stopped' }]);
      // Another instance: both messages come back well before ack_wait, and run once each.
      const runs: number[] = [];
      const second = await consumeJetStream({
        store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
        consumer: await bed.nc.jetstream().consumers.get(stream, 'w'),
        handler: async (message) => {
          runs.push((JSON.parse(Buffer.from(message.data).toString()) as { n: number }).n);
          return 'second';
        },
      });
      // Half of ack_wait: a message left to ack_wait cannot come back within it.
      expect(await until(() => runs.length >= 2, 15_000)).toBe(true);
      await second.stop(5_000);
      expect([...runs].sort()).toEqual([1, 2]);
      // Acked: nothing left pending (asked a few times: acks are applied asynchronously).
      const jsm = await bed.nc.jetstreamManager();
      let info = await jsm.consumers.info(stream, 'w');
      for (let tries = 0; tries < 50 && info.num_ack_pending + info.num_pending > 0; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        info = await jsm.consumers.info(stream, 'w');
      }
      expect({ ackPending: info.num_ack_pending, pending: info.num_pending }).toEqual({
        ackPending: 0,
        pending: 0,
      });
      // Run once each, the child's handler never: nothing came back again at ack_wait.
      expect([...runs].sort()).toEqual([1, 2]);
    } finally {
      if (child && child.exitCode === null) child.kill('SIGKILL');
      await proxy.close();
    }
  });
});
