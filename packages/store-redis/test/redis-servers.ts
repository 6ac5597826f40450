/**
 * Starts throwaway redis-server processes on free loopback ports: a 3-primary Cluster and,
 * for outage tests, a read-only replica. Everything started here is tracked and torn down:
 * processes killed (SIGKILL after a grace period) and temp dirs removed.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface RedisServer {
  port: number;
  dir: string;
  process: ChildProcess;
  /** The extra arguments it was started with (a restart reuses them). */
  args: string[];
}

/**
 * `redis-server` and `redis-cli` can be run from PATH: true, or it throws. The fault tests
 * start servers of their own; without the binaries they fail with this message instead of
 * being skipped (a skipped fault test would pass CI with nothing checked).
 */
export function redisBinariesAvailable(): boolean {
  const ok = (bin: string) => spawnSync(bin, ['--version'], { stdio: 'ignore' }).status === 0;
  if (ok('redis-server') && ok('redis-cli')) return true;
  throw new Error(
    'redis-server and redis-cli are not on PATH: the fault tests start Redis servers of their own (apt-get install redis-server)',
  );
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * The low end of the kernel's ephemeral port range: every outgoing connection (and
 * `listen(0)`) takes its local port from that range, without SO_REUSEADDR, and while it holds
 * one a redis-server cannot bind it. A port drawn from it could be taken so while its server
 * is down (a test's kill -9 and restart on the same port: 6.5 s in which a loaded CI lane opens
 * thousands of loopback connections), and the restart would fail: "Address already in use".
 */
function ephemeralLow(): number {
  try {
    const low = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
    if (Number.isInteger(low) && low > 0) return low;
  } catch {
    // Not Linux: the low end most systems use by default.
  }
  return 32_768;
}

/** Where servers' ports are drawn from: below the ephemeral range, the bus port too. */
function portRange(): { from: number; count: number } {
  const low = ephemeralLow();
  const from = 10_000;
  // port + 10000 (the cluster bus) stays below the ephemeral range too.
  const count = low - 10_000 - from;
  // A range that leaves no room (a tuned kernel): the whole span, as before.
  return count >= 1_000 ? { from, count } : { from: 20_000, count: 35_000 };
}

/**
 * A free port whose cluster bus port (port + 10000) is free too, both outside the ephemeral
 * range (see {@link ephemeralLow}).
 */
async function freePort(taken: Set<number>): Promise<number> {
  const range = portRange();
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = range.from + Math.floor(Math.random() * range.count);
    if (taken.has(port) || taken.has(port + 10_000)) continue;
    if ((await portIsFree(port)) && (await portIsFree(port + 10_000))) {
      taken.add(port);
      taken.add(port + 10_000);
      return port;
    }
  }
  throw new Error('No free loopback port pair found for redis-server');
}

const takenPorts = new Set<number>();

async function ping(port: number): Promise<boolean> {
  try {
    const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'ping']);
    return stdout.trim() === 'PONG';
  } catch {
    return false;
  }
}

async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

/**
 * Starts one redis-server in the foreground (so it dies with us) with extra arguments, on a
 * free port and a new temp dir, or on the port and dir of `at` (a restart).
 */
export async function startRedisServer(
  extraArgs: string[] = [],
  at?: { port: number; dir: string },
  readyWithinMs = 20_000,
): Promise<RedisServer> {
  const port = at?.port ?? (await freePort(takenPorts));
  const dir = at?.dir ?? (await mkdtemp(join(tmpdir(), `idem-redis-${port}-`)));
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      'no',
      '--daemonize',
      'no',
      '--logfile',
      join(dir, 'redis.log'),
      ...extraArgs,
    ],
    { stdio: 'ignore' },
  );
  const server: RedisServer = { port, dir, process: child, args: extraArgs };
  live.add(server);
  try {
    await waitFor(`redis-server on port ${port}`, () => ping(port), readyWithinMs);
  } catch (error) {
    await stopRedisServer(server);
    throw error;
  }
  return server;
}

const live = new Set<RedisServer>();

/** Kills a server (SIGTERM, then SIGKILL) and deletes its temp dir. */
export async function stopRedisServer(server: RedisServer): Promise<void> {
  live.delete(server);
  const child = server.process;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    await exited;
    clearTimeout(timer);
  }
  takenPorts.delete(server.port);
  takenPorts.delete(server.port + 10_000);
  await rm(server.dir, { recursive: true, force: true });
}

/** Sends `signal` to the server process (SIGKILL waits until it has exited). */
export async function signalRedisServer(
  server: RedisServer,
  signal: 'SIGKILL' | 'SIGSTOP' | 'SIGCONT',
): Promise<void> {
  const child = server.process;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = signal === 'SIGKILL' ? once(child, 'exit') : undefined;
  child.kill(signal);
  await exited;
}

/** Starts the server again on its port and dir (after a kill), with the same arguments. */
export async function restartRedisServer(
  server: RedisServer,
  readyWithinMs?: number,
): Promise<RedisServer> {
  live.delete(server);
  const again = await startRedisServer(server.args, server, readyWithinMs);
  return again;
}

// A crashed run must not leave servers behind either.
process.once('exit', () => {
  for (const server of live) server.process.kill('SIGKILL');
});

/** Starts `primaries` cluster-enabled servers, joins them with `redis-cli --cluster create`, waits for `cluster_state:ok`. */
export async function startCluster(primaries = 3): Promise<RedisServer[]> {
  const servers: RedisServer[] = [];
  try {
    for (let i = 0; i < primaries; i++) {
      servers.push(
        await startRedisServer([
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          'nodes.conf',
          '--cluster-node-timeout',
          '5000',
        ]),
      );
    }
    await run('redis-cli', [
      '--cluster',
      'create',
      ...servers.map((s) => `127.0.0.1:${s.port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ]);
    for (const server of servers) {
      await waitFor(`cluster_state:ok on port ${server.port}`, async () => {
        const { stdout } = await run('redis-cli', [
          '-h',
          '127.0.0.1',
          '-p',
          String(server.port),
          'cluster',
          'info',
        ]);
        return stdout.includes('cluster_state:ok');
      });
    }
    return servers;
  } catch (error) {
    await Promise.all(servers.map(stopRedisServer));
    throw error;
  }
}

/** `redis-cli -p <port> ...args` on a test server (or any node: `{ port }`); its trimmed output. */
export async function cli(server: Pick<RedisServer, 'port'>, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-p', String(server.port), ...args]);
  return stdout.trim();
}

/** The index in `servers` of the primary that holds `slot`. */
async function holderOf(servers: RedisServer[], slot: number): Promise<number> {
  const holds = await Promise.all(
    servers.map(async (s) => {
      const line = (await cli(s, 'cluster', 'nodes')).split('\n').find((l) => l.includes('myself'));
      return (line ?? '')
        .split(' ')
        .slice(8)
        .some((range) => {
          const [from, to] = range.split('-').map(Number);
          return slot >= (from as number) && slot <= ((to ?? from) as number);
        });
    }),
  );
  return holds.indexOf(true);
}

/**
 * Moves the slot of `redisKey`, with its keys, to the next primary (a resharding step:
 * SETSLOT IMPORTING / MIGRATING, MIGRATE of its keys, SETSLOT NODE on every primary).
 * `duringMigration` runs after the keys moved and before the slot is handed over (the
 * window in which the source answers -ASK for them). Returns the source and target servers.
 */
export async function moveSlot(
  servers: RedisServer[],
  redisKey: string,
  duringMigration?: () => Promise<void>,
): Promise<{ source: RedisServer; target: RedisServer }> {
  const slot = Number(await cli(servers[0] as RedisServer, 'cluster', 'keyslot', redisKey));
  const ids = await Promise.all(servers.map((s) => cli(s, 'cluster', 'myid')));
  const from = await holderOf(servers, slot);
  const to = (from + 1) % servers.length;
  const [source, target] = [servers[from] as RedisServer, servers[to] as RedisServer];
  await cli(target, 'cluster', 'setslot', String(slot), 'importing', ids[from] as string);
  await cli(source, 'cluster', 'setslot', String(slot), 'migrating', ids[to] as string);
  const keys = (await cli(source, 'cluster', 'getkeysinslot', String(slot), '100'))
    .split('\n')
    .filter(Boolean);
  if (keys.length > 0)
    await cli(
      source,
      'migrate',
      '127.0.0.1',
      String(target.port),
      '',
      '0',
      '5000',
      'KEYS',
      ...keys,
    );
  await duringMigration?.();
  for (const server of servers)
    await cli(server, 'cluster', 'setslot', String(slot), 'node', ids[to] as string);
  return { source, target };
}
