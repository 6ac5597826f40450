// Review round 10 (rev10a): the CLI run in-process (`runCli`, as the README's "From code"
// shows) against the real Redis and silent loopback servers. Findings are `it.fails` (they
// state the correct behaviour); attacks that held are plain `it`.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { withIdempotency } from '@idem/http';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/index.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** runCli with its lines captured. */
async function run(...argv: string[]): Promise<{ code: number; lines: string[]; ms: number }> {
  const lines: string[] = [];
  const started = performance.now();
  const code = await runCli(argv, { out: (l) => lines.push(l), err: (l) => lines.push(l) });
  return { code, lines, ms: performance.now() - started };
}

/** A TCP server on loopback that accepts connections and never answers. */
async function silentServer() {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('rev10a cli', () => {
  let client: Redis;
  const prefix = `rev10a-cli:${randomBytes(4).toString('hex')}:`;
  beforeAll(async () => {
    client = new Redis(REDIS_URL, { ...recommendedRedisOptions(), lazyConnect: true });
    await client.connect().catch((error: unknown) => {
      throw new Error(`No Redis at ${REDIS_URL} (${String(error)}): start it or set REDIS_URL`);
    });
  });
  afterAll(async () => {
    const keys = await client.keys(`${prefix}*`);
    if (keys.length > 0) await client.del(...keys);
    client.disconnect();
  });

  // FIXED (was FINDING LOW): the <key> argument is taken literally: the Idempotency-Key header value as a log shows it ("order-7", the Structured Field String our own client sends by default) derives another storage key, so inspect/release of a stuck key answer "no record" (exit 3).
  it('inspect with the key as the header carried it ("order-7") finds the record, or says how to give it', async () => {
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let started = 0;
    const handler = withIdempotency(
      async () => {
        started++;
        await gate; // stuck: the operator is called
        return Response.json({ ok: true });
      },
      {
        store: createRedisStore({ client, keyPrefix: prefix }),
        scope: () => ({ principal: 'acct-1' }),
      },
    );
    const stuck = handler(
      new Request('http://localhost/orders', {
        method: 'POST',
        headers: { 'Idempotency-Key': '"order-7"', 'content-type': 'application/json' },
        body: '{}',
      }),
    );
    for (let i = 0; i < 100 && started === 0; i++) await sleep(20);
    const scope = ['--principal', 'acct-1', '--operation', 'POST /orders'];
    const store = ['--store', REDIS_URL, '--prefix', prefix];
    try {
      const bare = await run('inspect', 'order-7', ...scope, ...store);
      expect(bare.code).toBe(0); // control: the record is there
      // The header value, as a request log or our own client's onAttempt shows it.
      const quoted = await run('inspect', '"order-7"', ...scope, ...store);
      // Expected: 0 (the same record: the header's Structured Field String is unquoted as
      // @idem/http does) or 2 (a usage error saying to give the key without quotes).
      // Before the fix: 3, "no record at 6c3f…", for a key that is stuck right now.
      expect(quoted.code).toBe(2);
      expect(quoted.lines.join('\n')).toContain('(order-7)');
      expect([0, 2]).toContain(quoted.code);
    } finally {
      open();
      await stuck;
    }
  });

  // FIXED (was FINDING LOW): --principal is always a string, but @idem/http principals are any JSON value but null (a numeric user id 42, an object { tenant, user }): for them --principal derives another storage key and inspect/release answer "no record" (exit 3) for a record that exists.
  it('--principal 42 finds the record of a scope hook that returns { principal: 42 } (or says to use --scope)', async () => {
    const handler = withIdempotency(async () => Response.json({ ok: true }), {
      store: createRedisStore({ client, keyPrefix: prefix }),
      scope: () => ({ principal: 42 }), // a numeric user id, as many apps have
    });
    const done = await handler(
      new Request('http://localhost/orders', {
        method: 'POST',
        headers: { 'Idempotency-Key': '"order-42"', 'content-type': 'application/json' },
        body: '{}',
      }),
    );
    expect(done.status).toBe(200);
    const store = ['--store', REDIS_URL, '--prefix', prefix];
    // Control: the record is there, reachable through --scope.
    const viaScope = await run(
      ...['inspect', 'order-42', '--scope', '["idem/http/v1",42,"POST /orders"]'],
      ...store,
    );
    expect(viaScope.code).toBe(0);
    const viaPrincipal = await run(
      ...['inspect', 'order-42', '--principal', '42', '--operation', 'POST /orders'],
      ...store,
    );
    // Expected: 0 (the same record), or a usage error saying the principal is taken as a
    // string and to give --scope. Before the fix: 3, "no record" (scope ["idem/http/v1","42",...]).
    expect(viaPrincipal.code).toBe(2);
    expect(viaPrincipal.lines.join('\n')).toContain('--principal-json 42');
    // --principal-json reads it as the hook returns it: the record is found.
    const viaJson = await run(
      ...['inspect', 'order-42', '--principal-json', '42', '--operation', 'POST /orders'],
      ...store,
    );
    expect(viaJson.code).toBe(0);
    // A string principal is still taken as it is.
    const stringId = await run(
      ...['inspect', 'order-42', '--principal', 'acct-42', '--operation', 'POST /orders'],
      ...store,
    );
    expect(stringId.code).toBe(3);
  });

  // FIXED (was FINDING LOW): runCli overruns --timeout-ms against a silent PostgreSQL: the finally awaits pool.end() without a bound, which waits out the pool's own 2 s connection timeout (2.0 s for --timeout-ms 500).
  it('a silent PostgreSQL: runCli answers within --timeout-ms (500 ms, plus a margin)', async () => {
    const server = await silentServer();
    try {
      const result = await run(
        ...['inspect', 'k', '--scope', '1', '--timeout-ms', '500'],
        ...['--store', `postgres://postgres@127.0.0.1:${server.port}/test`],
      );
      expect(result.code).toBe(1);
      expect(result.lines.join('\n')).toMatch(/gave up after 500 ms/);
      // Before the fix: about 2_000 ms (recommendedPoolConfig's connectionTimeoutMillis), whatever
      // --timeout-ms says below it.
      expect(result.ms).toBeLessThan(1_000);
    } finally {
      await server.close();
    }
  });

  it('held: a silent Redis: runCli answers within --timeout-ms, and the process is not held', async () => {
    const server = await silentServer();
    try {
      const result = await run(
        ...['inspect', 'k', '--scope', '1', '--timeout-ms', '500'],
        ...['--store', `redis://127.0.0.1:${server.port}`],
      );
      expect(result.code).toBe(1);
      expect(result.ms).toBeLessThan(1_000);
    } finally {
      await server.close();
    }
  });

  it('held: --timeout-ms that is not a whole number of ms up to 2^31-1 is a usage error', async () => {
    for (const bad of ['0', '-1', 'NaN', 'Infinity', '2147483648', '1.5', '']) {
      const result = await run(
        ...['inspect', 'k', '--scope', '1', '--timeout-ms', bad],
        ...['--store', REDIS_URL],
      );
      expect(result.code, bad).toBe(2);
    }
  });

  it('held: a key that is too long, empty or not printable ASCII is a usage error, nothing sent', async () => {
    for (const bad of ['x'.repeat(256), '', 'ключ', 'a\tb']) {
      const result = await run('inspect', bad, '--scope', '1', '--store', 'redis://127.0.0.1:1');
      expect(result.code).toBe(2);
    }
  });
});
