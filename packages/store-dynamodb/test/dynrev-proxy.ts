/**
 * A loopback TCP endpoint for the dynrev fault tests whose behaviour can be switched while it
 * runs:
 * - `forward`: a transparent proxy to DynamoDB Local;
 * - `silent`: accepts connections and reads requests, never answers (a hung service);
 * - `stall-after-headers`: answers `200` headers with a long Content-Length, then nothing
 *   (a half-open connection after the response started);
 * - `trickle`: answers the same headers, then one body byte every `trickleMs` (a slow
 *   endpoint that is never idle long enough for a socket idle timeout);
 * - `lose-next`: forwards, and swallows the next answer, closing the connection.
 * In `forward` mode, `delayMs` holds every answer that long (the request lands at once, its
 * answer comes late). Every socket it holds is destroyed by `close()`; timers are cleared.
 */
import { once } from 'node:events';
import { createServer, type Socket, connect as tcpConnect } from 'node:net';

export type ProxyMode = 'forward' | 'silent' | 'stall-after-headers' | 'trickle';

export interface FaultProxy {
  readonly endpoint: string;
  mode: ProxyMode;
  /** While true, established forward connections silently drop bytes both ways (half-open). */
  blackhole: boolean;
  /** Interval between trickled body bytes, ms. */
  trickleMs: number;
  /** Holds every forwarded answer this many ms (forward mode); 0: at once. */
  delayMs: number;
  /** Swallow the next `n` answers (forward mode), closing their connections. */
  loseNext(n?: number): void;
  readonly lost: number;
  readonly connections: number;
  /** Client connections open now. */
  readonly open: number;
  /** Destroys every connection held now (so a client's pooled sockets go away). */
  dropAll(): void;
  close(): Promise<void>;
}

const HEADERS =
  'HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n' +
  'x-amzn-RequestId: dynrev\r\nContent-Length: 1000000\r\n\r\n';

export async function startFaultProxy(upstreamPort: number): Promise<FaultProxy> {
  let lose = 0;
  let lost = 0;
  let connections = 0;
  let open = 0;
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setInterval>>();
  const held = new Set<ReturnType<typeof setTimeout>>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const state = { mode: 'forward' as ProxyMode, trickleMs: 200, blackhole: false, delayMs: 0 };
  const server = createServer((client) => {
    connections++;
    open++;
    client.once('close', () => open--);
    track(client);
    const mode = state.mode;
    if (mode === 'silent') {
      client.on('data', () => {});
      return;
    }
    if (mode === 'stall-after-headers' || mode === 'trickle') {
      let answered = false;
      client.on('data', () => {
        if (answered) return;
        answered = true;
        client.write(HEADERS);
        client.write('{');
        if (mode === 'trickle') {
          const timer = setInterval(() => {
            if (client.destroyed) {
              clearInterval(timer);
              timers.delete(timer);
              return;
            }
            client.write(' ');
          }, state.trickleMs);
          timers.add(timer);
        }
      });
      return;
    }
    const upstream = tcpConnect({ host: '127.0.0.1', port: upstreamPort });
    track(upstream);
    client.on('data', (chunk) => {
      if (!state.blackhole) upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (state.blackhole) return;
      if (lose > 0) {
        lose--;
        lost++;
        client.destroy();
        upstream.destroy();
        return;
      }
      if (state.delayMs <= 0) {
        client.write(chunk);
        return;
      }
      const timer = setTimeout(() => {
        held.delete(timer);
        if (!client.destroyed) client.write(chunk);
      }, state.delayMs);
      held.add(timer);
    });
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('proxy has no port');
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    get mode() {
      return state.mode;
    },
    set mode(value: ProxyMode) {
      state.mode = value;
    },
    get blackhole() {
      return state.blackhole;
    },
    set blackhole(value: boolean) {
      state.blackhole = value;
    },
    get trickleMs() {
      return state.trickleMs;
    },
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(value: number) {
      state.delayMs = value;
    },
    get open() {
      return open;
    },
    set trickleMs(value: number) {
      state.trickleMs = value;
    },
    loseNext(n = 1) {
      lose += n;
    },
    get lost() {
      return lost;
    },
    get connections() {
      return connections;
    },
    dropAll() {
      for (const socket of sockets) socket.destroy();
    },
    async close() {
      for (const timer of timers) clearInterval(timer);
      timers.clear();
      for (const timer of held) clearTimeout(timer);
      held.clear();
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Settles `promise` or gives up after `ms`: `{ settled: false }` when it was still pending. */
export async function within<T>(
  promise: Promise<T>,
  ms: number,
): Promise<
  | { settled: true; ok: true; value: T; ms: number }
  | { settled: true; ok: false; error: unknown; ms: number }
  | { settled: false; ms: number }
> {
  const started = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<{ settled: false; ms: number }>((resolve) => {
    timer = setTimeout(() => resolve({ settled: false, ms: performance.now() - started }), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (value) => ({
          settled: true as const,
          ok: true as const,
          value,
          ms: performance.now() - started,
        }),
        (error: unknown) => ({
          settled: true as const,
          ok: false as const,
          error,
          ms: performance.now() - started,
        }),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
