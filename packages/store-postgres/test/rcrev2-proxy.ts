import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import pg from 'pg';
import { runStatement } from '../src/pg-call.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL } from './pg-env.js';

const url = new URL(DATABASE_URL);

/**
 * rcrev2: a loopback proxy in front of PostgreSQL whose NEW connections can be delayed
 * (`delayMs`, a remote server with TLS, a saturated host) or refused, and whose EXISTING
 * connections can be frozen one by one by the client's local port (a NAT or load balancer
 * that silently dropped an idle flow: both directions swallowed, sockets kept open).
 */
export async function startRcrev2Proxy() {
  const sockets = new Set<Socket>();
  const frozenPorts = new Set<number>();
  const byPort = new Map<number, () => void>();
  let connections = 0;
  const state = { delayMs: 0, refuse: false };
  const server = createServer((client) => {
    connections++;
    sockets.add(client);
    client.on('error', () => {});
    if (state.refuse) {
      client.destroy();
      return;
    }
    client.pause();
    const port = client.remotePort as number;
    const go = () => {
      if (client.destroyed) return;
      const upstream = createConnection({ host: url.hostname, port: Number(url.port || 5432) });
      sockets.add(upstream);
      upstream.on('error', () => {});
      client.on('data', (chunk: Buffer) => {
        if (!frozenPorts.has(port)) upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => {
        if (!frozenPorts.has(port)) client.write(chunk);
      });
      client.resume();
      const end = () => {
        byPort.delete(port);
        client.destroy();
        upstream.destroy();
      };
      byPort.set(port, end);
      client.on('close', end);
      // A frozen flow: the server's side closing is not seen by the client.
      upstream.on('close', () => {
        if (!frozenPorts.has(port)) end();
      });
    };
    if (state.delayMs > 0) setTimeout(go, state.delayMs).unref();
    else go();
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
    connections: () => connections,
    /** Freezes the flow of the client whose local port is `clientPort`. */
    freeze(clientPort: number) {
      frozenPorts.add(clientPort);
    },
    /** Drops every open flow (both sides). */
    dropAll() {
      for (const end of [...byPort.values()]) end();
    },
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** The local port of a node-postgres client's socket. */
export function localPortOf(client: unknown): number {
  return (client as { connection: { stream: Socket } }).connection.stream.localPort as number;
}

/** A pool behind the proxy and a renewal connection on it, opened and warm. */
export interface ProxiedRenewals {
  proxy: Awaited<ReturnType<typeof startRcrev2Proxy>>;
  pool: pg.Pool;
  rc: RenewalConnection;
}

/**
 * Runs `body` with a pool (`max`, `idleTimeoutMillis`) behind a fresh proxy, one of its
 * connections checked out when `holdOne` (as by a business transaction), and a renewal
 * connection in use and warmed by one statement; everything is closed after.
 */
export async function withProxiedRenewals(
  options: {
    max: number;
    idleTimeoutMillis?: number;
    holdOne: boolean;
    openMs: number;
    statementMs: number;
  },
  body: (setup: ProxiedRenewals) => Promise<void>,
): Promise<void> {
  const proxy = await startRcrev2Proxy();
  const pool = new pg.Pool({
    connectionString: proxy.url,
    max: options.max,
    ...(options.idleTimeoutMillis === undefined
      ? {}
      : { idleTimeoutMillis: options.idleTimeoutMillis }),
  });
  pool.on('error', () => {});
  const held = options.holdOne ? await pool.connect() : undefined;
  held?.on('error', () => {});
  const rc = new RenewalConnection(pool, options.openMs, options.statementMs);
  const unused = rc.use();
  try {
    await runStatement(rc, 'warm', { text: 'SELECT 1' }, options.statementMs);
    await body({ proxy, pool, rc });
  } finally {
    unused();
    held?.release();
    proxy.close();
    void pool.end().catch(() => {});
  }
}
