import net from 'node:net';
import { AckPolicy, connect, type NatsConnection } from 'nats';
import { connectNats, NATS_URL, uniqueName } from './brokers.js';

/**
 * A TCP proxy on loopback to a broker that can fall silent: while paused it forwards nothing
 * either way and keeps the sockets open (a broker whose host froze, a half-dead NAT entry).
 * With `downstreamDelayMs`, what the broker sends reaches the client that much later (in order):
 * a slow link, whose round trips (a drain's PING/PONG) outlast a short stop().
 * `hold()` silences it too, but keeps what each side sends; `resume()` then delivers it, in
 * order, and forwards again: a broker that comes back (`heldDown()`: the bytes the broker sent
 * the client meanwhile).
 */
export async function silentableProxy(
  target: { host: string; port: number },
  { downstreamDelayMs = 0 }: { downstreamDelayMs?: number } = {},
) {
  let paused = false;
  let holding = false;
  const flushes = new Set<() => void>();
  let heldDown = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    const up: Buffer[] = [];
    const down: Buffer[] = [];
    flushes.add(() => {
      for (const d of up.splice(0)) upstream.write(d);
      for (const d of down.splice(0)) if (!client.destroyed) client.write(d);
    });
    client.on('data', (d) => {
      if (holding) up.push(d);
      else if (!paused) upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (holding) {
        down.push(d);
        heldDown += d.length;
        return;
      }
      if (paused) return;
      if (downstreamDelayMs === 0) client.write(d);
      else
        setTimeout(() => {
          if (!client.destroyed) client.write(d);
        }, downstreamDelayMs);
    });
    // Ended, not destroyed: what the client wrote last still reaches the broker.
    client.on('close', () => upstream.end());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    pause: () => {
      paused = true;
    },
    hold: () => {
      holding = true;
    },
    heldDown: () => heldDown,
    resume: () => {
      holding = false;
      for (const flush of flushes) flush();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Races `promise` with `ms`: `'timeout'` when it did not settle by then. */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    promise,
    new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), ms);
    }),
  ]);
  clearTimeout(timer);
  return result;
}

/**
 * A JetStream stream (`<stream>.>`) with a durable consumer `c`, and a connection `nc` to it
 * through a {@link silentableProxy}; `direct` is a connection of its own (to publish, and to
 * delete the stream in `close`).
 */
export async function silentJetStream(label: string) {
  const target = new URL(NATS_URL.replace(/^nats:/, 'http:'));
  const proxy = await silentableProxy({ host: target.hostname, port: Number(target.port || 4222) });
  const direct: NatsConnection = await connectNats();
  const jsm = await direct.jetstreamManager();
  const stream = uniqueName(label).replace(/[^A-Za-z0-9_-]/g, '_');
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
  await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit });
  const nc = await connect({
    servers: `127.0.0.1:${proxy.port}`,
    timeout: 5_000,
    maxReconnectAttempts: 0,
  });
  return {
    proxy,
    direct,
    nc,
    stream,
    async close() {
      await proxy.close();
      // Bounded: a close over a dead socket may wait for an answer that never comes.
      await within(
        nc.close().catch(() => undefined),
        2_000,
      );
      await jsm.streams.delete(stream).catch(() => undefined);
      await direct.close();
    },
  };
}
