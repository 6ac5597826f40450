import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import { DATABASE_URL } from './pg-env.js';

const target = new URL(DATABASE_URL);

/**
 * A loopback proxy in front of PostgreSQL that forwards what clients send at `bytesPerTick`
 * every 50 ms (a slow uplink; answers at once). `freezeUplinks()` stops forwarding what any
 * client sends, for good (a network that stopped carrying the client's packets one way, or a
 * client that froze: the server hears nothing more of it), while the server's answers still
 * arrive. `url` is the connection string through it.
 */
export async function startThrottledProxy(bytesPerTick: number) {
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setInterval>>();
  let frozen = false;
  const server = createServer((client) => {
    const upstream = createConnection({
      host: target.hostname,
      port: Number(target.port || 5432),
    });
    sockets.add(client);
    sockets.add(upstream);
    let pending = Buffer.alloc(0);
    client.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
    });
    const pump = setInterval(() => {
      if (frozen || pending.length === 0 || upstream.destroyed) return;
      upstream.write(pending.subarray(0, bytesPerTick));
      pending = pending.subarray(bytesPerTick);
    }, 50);
    timers.add(pump);
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    const end = () => {
      clearInterval(pump);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const via = new URL(DATABASE_URL);
  via.hostname = '127.0.0.1';
  via.port = String((server.address() as { port: number }).port);
  return {
    url: via.toString(),
    freezeUplinks() {
      frozen = true;
    },
    close() {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
