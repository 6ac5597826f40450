import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import type pg from 'pg';
import { DATABASE_URL } from './pg-env.js';

const url = new URL(DATABASE_URL);

/**
 * pgrev22: a loopback proxy in front of PostgreSQL. New connections: `pass`, `reset` (closed
 * at once) or `blackhole` (accepted, never answered). Existing flows, by the client's local
 * port: `freeze` (both directions swallowed for good: a NAT dropped it) or `hold` (the
 * client's bytes buffered, delivered on `release`, even after the client closed: a flow
 * delayed, not lost). Counts accepted connections.
 */
export async function startPgrev22Proxy() {
  const sockets = new Set<Socket>();
  const frozen = new Set<number>();
  const held = new Map<number, Buffer[]>();
  const upstreams = new Map<number, Socket>();
  const state = { mode: 'pass' as 'pass' | 'reset' | 'blackhole', accepted: 0 };
  const server = createServer((client) => {
    state.accepted++;
    sockets.add(client);
    client.on('error', () => {});
    if (state.mode === 'reset') {
      client.destroy();
      return;
    }
    if (state.mode === 'blackhole') {
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
      const buffer = held.get(port);
      if (buffer) buffer.push(chunk);
      else upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!frozen.has(port) && !client.destroyed) client.write(chunk);
    });
    client.on('close', () => {
      if (held.has(port)) return; // delivered later by release()
      upstream.destroy();
    });
    upstream.on('close', () => {
      if (!frozen.has(port)) client.destroy();
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
    hold(clientPort: number) {
      if (!held.has(clientPort)) held.set(clientPort, []);
    },
    /** Delivers what a held flow buffered; the flow passes from now on. */
    release(clientPort: number) {
      const buffer = held.get(clientPort);
      held.delete(clientPort);
      const upstream = upstreams.get(clientPort);
      if (!buffer || !upstream || upstream.destroyed) return;
      for (const chunk of buffer) upstream.write(chunk);
    },
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** True for the renewal connection's own client (its `statement_timeout` is the store's limit). */
export function isOwn(client: pg.Client, statementMs: number): boolean {
  const params = (client as unknown as { connectionParameters: { statement_timeout?: unknown } })
    .connectionParameters;
  return params.statement_timeout === statementMs;
}

/** A statement's outcome and when it settled (ms after `t0`). */
export function outcome(p: Promise<unknown>, t0: number): Promise<string> {
  return p.then(
    () => `ok ${Math.round(performance.now() - t0)}`,
    (e: unknown) =>
      `${(e as Error).name}:${(e as Error).message.slice(0, 40)} ${Math.round(performance.now() - t0)}`,
  );
}
