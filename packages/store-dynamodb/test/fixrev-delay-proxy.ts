/**
 * fixrev: a loopback TCP proxy to DynamoDB Local that forwards requests at once and holds
 * every answer for `delayMs` (the write lands, its answer comes late), or never answers
 * (`silent`). Counts the client sockets open now. `close()` destroys everything.
 */
import { once } from 'node:events';
import { createServer, type Socket, connect as tcpConnect } from 'node:net';

export interface DelayProxy {
  readonly endpoint: string;
  delayMs: number;
  silent: boolean;
  /** Client connections open now. */
  readonly open: number;
  close(): Promise<void>;
}

export async function startDelayProxy(upstreamPort: number): Promise<DelayProxy> {
  const state = { delayMs: 0, silent: false };
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let open = 0;
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const server = createServer((client) => {
    open++;
    client.once('close', () => open--);
    track(client);
    const upstream = tcpConnect({ host: '127.0.0.1', port: upstreamPort });
    track(upstream);
    client.on('data', (chunk) => {
      if (!state.silent) upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      const delay = state.delayMs;
      if (delay <= 0) {
        client.write(chunk);
        return;
      }
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (!client.destroyed) client.write(chunk);
      }, delay);
      timers.add(timer);
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
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(value: number) {
      state.delayMs = value;
    },
    get silent() {
      return state.silent;
    },
    set silent(value: boolean) {
      state.silent = value;
    },
    get open() {
      return open;
    },
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}
