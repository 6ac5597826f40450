import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import type pg from 'pg';
import { DATABASE_URL } from './pg-env.js';

const url = new URL(DATABASE_URL);

/**
 * pgrev21: a loopback proxy in front of PostgreSQL whose handling of NEW connections can be
 * switched: `pass` (forwarded), `reset` (closed at once), `blackhole` (accepted, never
 * answered, kept open). Existing flows keep working. Counts every accepted connection.
 */
export async function startPgrev21Proxy() {
  const sockets = new Set<Socket>();
  const state = { mode: 'pass' as 'pass' | 'reset' | 'blackhole', accepted: 0, open: 0 };
  const server = createServer((client) => {
    state.accepted++;
    state.open++;
    sockets.add(client);
    client.on('error', () => {});
    client.on('close', () => {
      state.open--;
      sockets.delete(client);
    });
    if (state.mode === 'reset') {
      client.destroy();
      return;
    }
    if (state.mode === 'blackhole') {
      client.on('data', () => {});
      return;
    }
    const upstream = createConnection({ host: url.hostname, port: Number(url.port || 5432) });
    sockets.add(upstream);
    upstream.on('error', () => {});
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(upstream);
    };
    client.on('close', end);
    upstream.on('close', end);
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
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/**
 * A pool `onConnect` hook that never settles for the renewal connection (told apart by its
 * `statement_timeout`, the store's statement limit) while `stalls()` says so: its opening
 * stalls until the opening's limit; the pool's own clients open as usual.
 */
export function ownSetUpStalls(statementMs: number, stalls: () => boolean = () => true) {
  return async (client: pg.Client): Promise<void> => {
    const params = (client as unknown as { connectionParameters: { statement_timeout?: unknown } })
      .connectionParameters;
    if (params.statement_timeout === statementMs && stalls()) await new Promise(() => {});
  };
}
