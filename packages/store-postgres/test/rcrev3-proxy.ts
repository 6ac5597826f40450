import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import { DATABASE_URL } from './pg-env.js';

const url = new URL(DATABASE_URL);

/**
 * rcrev3: a loopback proxy in front of PostgreSQL. New connections can be held silent
 * (`silentNew`: accepted, never forwarded, kept open forever: a server or balancer that
 * accepts and never answers). Existing flows, by the client's local port, can be frozen
 * (both directions swallowed) or stalled (client-to-server bytes buffered, then delivered
 * late on `unstall`: a flow delayed, not lost).
 */
export async function startRcrev3Proxy() {
  const sockets = new Set<Socket>();
  const frozen = new Set<number>();
  const stalled = new Map<number, Buffer[]>();
  const upstreams = new Map<number, Socket>();
  const state = { silentNew: false };
  const server = createServer((client) => {
    sockets.add(client);
    client.on('error', () => {});
    if (state.silentNew) {
      client.on('data', () => {});
      return;
    }
    const port = client.remotePort as number;
    const upstream = createConnection({ host: url.hostname, port: Number(url.port || 5432) });
    sockets.add(upstream);
    upstreams.set(port, upstream);
    upstream.on('error', () => {});
    client.on('data', (chunk: Buffer) => {
      if (frozen.has(port)) return;
      const held = stalled.get(port);
      if (held) held.push(chunk);
      else upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!frozen.has(port)) client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    // A stalled flow outlives its client: what it buffered still reaches the server later.
    client.on('close', () => {
      if (stalled.has(port)) client.destroy();
      else end();
    });
    upstream.on('close', () => {
      if (!frozen.has(port)) end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const proxied = new URL(DATABASE_URL);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(port);
  return {
    url: proxied.toString(),
    state,
    freeze(clientPort: number) {
      frozen.add(clientPort);
    },
    stall(clientPort: number) {
      if (!stalled.has(clientPort)) stalled.set(clientPort, []);
    },
    /** Delivers what a stalled flow buffered (even if its client side closed meanwhile). */
    unstall(clientPort: number) {
      const held = stalled.get(clientPort);
      stalled.delete(clientPort);
      const upstream = upstreams.get(clientPort);
      if (!held || !upstream || upstream.destroyed) return;
      for (const chunk of held) upstream.write(chunk);
      setTimeout(() => upstream.end(), 1_000).unref();
    },
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
