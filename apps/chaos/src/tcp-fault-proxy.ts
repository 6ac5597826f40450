import { connect, createServer, type Socket } from 'node:net';

/**
 * What the proxy does with traffic right now:
 * - `pass`: forwards both ways;
 * - `drop`: closes every open connection and every new one at once (a store that is gone);
 * - `blackhole`: keeps every socket open and accepts new ones but forwards nothing until the
 *   mode changes, then delivers what was held (a silent network that heals);
 * - `delay`: forwards every chunk `ms` later, in order.
 */
export type ProxyMode =
  | { kind: 'pass' }
  | { kind: 'drop' }
  | { kind: 'blackhole' }
  | { kind: 'delay'; ms: number };

/** A loopback TCP proxy in front of one port, with faults switched on and off at will. */
export interface TcpFaultProxy {
  port: number;
  readonly mode: ProxyMode;
  setMode(mode: ProxyMode): void;
  /** Closes each open connection with probability `fraction` (random resets). */
  dropSome(fraction: number): number;
  /** Connections accepted and connections cut by a fault so far. */
  readonly stats: { accepted: number; cut: number };
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream?: Socket;
}

/**
 * Forwards `from` to `to` chunk by chunk, honouring the proxy's mode at each chunk, and
 * passes on a clean end once everything before it was written. Returns the pump, to call
 * again once `to` exists.
 */
function lane(
  from: Socket,
  to: () => Socket | undefined,
  gate: () => Promise<number>,
): () => Promise<void> {
  const queue: Buffer[] = [];
  let busy = false;
  let ended = false;
  const pump = async () => {
    if (busy) return;
    busy = true;
    while (queue.length > 0) {
      const delay = await gate();
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      const target = to();
      if (!target || target.destroyed) break;
      target.write(queue.shift() as Buffer);
    }
    busy = false;
    const target = to();
    if (ended && queue.length === 0 && target && !target.destroyed) target.end();
    if (from.isPaused() && !from.destroyed) from.resume();
  };
  from.on('data', (chunk: Buffer) => {
    queue.push(chunk);
    if (queue.length > 64) from.pause();
    void pump();
  });
  from.on('end', () => {
    ended = true;
    void pump();
  });
  return pump;
}

/** Starts the proxy on 127.0.0.1 (a free port) in front of 127.0.0.1:`targetPort`. */
export async function startTcpFaultProxy(targetPort: number): Promise<TcpFaultProxy> {
  let mode: ProxyMode = { kind: 'pass' };
  const pairs = new Set<Pair>();
  const stats = { accepted: 0, cut: 0 };
  let waiters: (() => void)[] = [];

  /** Resolves when data may flow, with the delay to apply (0 in pass mode). */
  const gate = async (): Promise<number> => {
    while (mode.kind === 'blackhole' || mode.kind === 'drop') {
      if (mode.kind === 'drop') return Number.POSITIVE_INFINITY;
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
    return mode.kind === 'delay' ? mode.ms : 0;
  };
  const gateFinite = async () => {
    const delay = await gate();
    return Number.isFinite(delay) ? delay : 0;
  };

  const cut = (pair: Pair) => {
    stats.cut += 1;
    pair.client.destroy();
    pair.upstream?.destroy();
    pairs.delete(pair);
  };

  const server = createServer({ allowHalfOpen: true }, (client) => {
    stats.accepted += 1;
    const pair: Pair = { client };
    pairs.add(pair);
    client.on('error', () => undefined);
    // A reset on one side resets the other; a clean end is passed on by the lane.
    client.on('close', (hadError) => {
      if (hadError) pair.upstream?.destroy();
      pairs.delete(pair);
    });
    if (mode.kind === 'drop') {
      cut(pair);
      return;
    }
    // Data the client sends before the upstream is connected waits in the lane's queue.
    const pumpClient = lane(client, () => pair.upstream, gateFinite);
    void (async () => {
      await gateFinite();
      if (client.destroyed) return;
      const upstream = connect({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true });
      pair.upstream = upstream;
      upstream.on('error', () => undefined);
      upstream.on('close', (hadError) => {
        if (hadError) client.destroy();
      });
      lane(upstream, () => client, gateFinite);
      // Bytes the client sent meanwhile wait in its lane; Node buffers writes until connect.
      void pumpClient();
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    port,
    get mode() {
      return mode;
    },
    stats,
    setMode(next) {
      mode = next;
      if (next.kind === 'drop') for (const pair of [...pairs]) cut(pair);
      if (next.kind !== 'blackhole') {
        const woken = waiters;
        waiters = [];
        for (const wake of woken) wake();
      }
    },
    dropSome(fraction) {
      let dropped = 0;
      for (const pair of [...pairs]) {
        if (Math.random() < fraction) {
          cut(pair);
          dropped += 1;
        }
      }
      return dropped;
    },
    close: () =>
      new Promise((resolve) => {
        for (const pair of [...pairs]) {
          pair.client.destroy();
          pair.upstream?.destroy();
        }
        pairs.clear();
        const woken = waiters;
        waiters = [];
        for (const wake of woken) wake();
        server.close(() => resolve());
      }),
  };
}
