import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { selfSignedCertificate } from '../../../scripts/self-signed-certificate.js';
import { DATABASE_URL, randomName } from './pg-env.js';

/**
 * rcrev5: a process that ended its pool while the own renewal connection's opening hangs.
 * A TLS-terminating proxy in front of PostgreSQL (answers the SSLRequest with 'S', does the
 * handshake with a self-signed certificate, forwards the plaintext): the first `forward`
 * connections are forwarded, later ones stay silent after the handshake (a server that
 * accepted TLS and then hangs in its startup, a saturated pgbouncer).
 */
const table = inject('pgTable');
const upstreamUrl = new URL(DATABASE_URL);

async function startTlsProxy(tlsOn: boolean, forward: number) {
  const pair = tlsOn ? selfSignedCertificate() : undefined;
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((raw) => {
    accepted++;
    const n = accepted;
    sockets.add(raw);
    raw.on('error', () => {});
    const pipe = (client: Socket, first?: Buffer) => {
      if (n > forward) {
        // Silent: reads and swallows, never answers.
        client.on('data', () => {});
        return;
      }
      const upstream = createConnection({
        host: upstreamUrl.hostname,
        port: Number(upstreamUrl.port || 5432),
      });
      sockets.add(upstream);
      upstream.on('error', () => {});
      if (first && first.length > 0) upstream.write(first);
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    };
    if (!tlsOn) {
      pipe(raw);
      return;
    }
    raw.once('data', (chunk: Buffer) => {
      // SSLRequest: length 8, code 80877103.
      if (chunk.length >= 8 && chunk.readInt32BE(4) === 80877103) {
        raw.write('S');
        const secure = new TLSSocket(raw, { isServer: true, key: pair?.key, cert: pair?.cert });
        secure.on('error', () => {});
        sockets.add(secure);
        pipe(secure, chunk.subarray(8));
      } else {
        raw.destroy();
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    accepted: () => accepted,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

const proxies: Array<{ close(): void }> = [];
afterAll(() => {
  for (const p of proxies) p.close();
});

/**
 * A script: one execution through the engine (its pool's single connection forwarded), the
 * own renewal connection's opening (the proxy's second connection) hangs; the operation
 * returns, the pool is ended. Returns how long the process took to exit after `pool.end()`.
 */
async function exitAfterEnd(
  tlsOn: boolean,
): Promise<{ code: number | null; afterEndMs: number; accepted: number }> {
  const proxy = await startTlsProxy(tlsOn, 1);
  proxies.push(proxy);
  const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
  const url = new URL(DATABASE_URL);
  url.hostname = '127.0.0.1';
  url.port = String(proxy.port);
  const script = `
    import pg from 'pg';
    const { createPostgresIdempotency, createPostgresStore } = await import(${JSON.stringify(dist)});
    const pool = new pg.Pool({ connectionString: ${JSON.stringify(url.toString())}, max: 1, ${tlsOn ? 'ssl: { rejectUnauthorized: false },' : ''} });
    pool.on('error', () => {});
    const engine = createPostgresIdempotency({
      leaseMs: 20_000,
      store: createPostgresStore({ pool, table: ${JSON.stringify(table)}, keyPrefix: ${JSON.stringify(randomName('rc5exit'))}, statementTimeoutMs: 2_000 }),
    });
    // The opening (started when the execution holds the record) has time to reach the silent server.
    const r = await engine.execute({ key: 'k', scope: 's' }, async ({ tx }) => {
      await new Promise((resolve) => setTimeout(resolve, 400));
      return (await tx.query('SELECT 1 AS one')).rows[0].one;
    });
    await pool.end();
    console.log(JSON.stringify({ r, ended: performance.now() }));
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout?.on('data', (chunk) => {
    out += chunk;
  });
  const kill = setTimeout(() => child.kill('SIGKILL'), 25_000);
  const started = performance.now();
  const [code] = await once(child, 'exit');
  clearTimeout(kill);
  const exitedAt = performance.now() - started;
  const parsed = JSON.parse(out.trim().split('\n').pop() ?? '{}') as {
    r?: { value: number };
    ended?: number;
  };
  expect(parsed.r?.value).toBe(1);
  // The child's clock starts at its own start, close to ours: its end measured from it.
  return { code, afterEndMs: exitedAt - (parsed.ended ?? 0), accepted: proxy.accepted() };
}

describe('rcrev5: exit with the own connection opening hung', () => {
  // Held: without TLS the hung opening's socket is unref'd from the start: the script that
  // ended its pool exits at once (seen: tens of ms after pool.end()).
  it('a plain-TCP opening that hangs keeps no process alive', async () => {
    const { code, afterEndMs, accepted } = await exitAfterEnd(false);
    console.log(
      `[rcrev5 exit plain] exited ${Math.round(afterEndMs)} ms after pool.end(); proxy accepted ${accepted}`,
    );
    expect(code).toBe(0);
    expect(accepted).toBe(2);
    expect(afterEndMs).toBeLessThan(2_500);
  }, 30_000);

  // Held: with TLS (`ssl` in the pool's options) node-postgres wraps the socket unref'd
  // before connect() in a TLSSocket over the same handle, so the unref holds through the
  // handshake: an opening silent after the TLS handshake (a server or pooler stuck in its
  // startup) keeps no process alive either (seen: 14 ms after pool.end(), with openMs 20 s).
  it('a TLS opening that hangs after the handshake keeps no process alive', async () => {
    const { code, afterEndMs, accepted } = await exitAfterEnd(true);
    console.log(
      `[rcrev5 exit tls] exited ${Math.round(afterEndMs)} ms after pool.end(); proxy accepted ${accepted}`,
    );
    expect(code).toBe(0);
    expect(accepted).toBe(2);
    expect(afterEndMs).toBeLessThan(2_500);
  }, 30_000);
});
