/**
 * A PostgreSQL server a fault test owns (never the shared one on 5432): initdb into a temp
 * dir, `postgres` on a free loopback port with fsync on, frozen (SIGSTOP of the postmaster
 * and every backend), thawed, killed (-9, all processes) and restarted on the same data, and
 * stopped by PID. As root it runs as the `postgres` user (PostgreSQL refuses root).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface OwnPostgres {
  readonly port: number;
  readonly url: string;
  /** SIGSTOP (freeze) or SIGCONT (thaw) the postmaster and every backend. */
  freeze(): void;
  thaw(): void;
  /** SIGKILL to every process of the server; resolves once they are gone. */
  kill9(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it answers. */
  restart(): Promise<void>;
  /** Stops it (by PID) and removes its data. */
  destroy(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  for (const v of versions)
    if (existsSync(join(root, v, 'bin', 'initdb'))) return join(root, v, 'bin');
  const config = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (config.status === 0 && existsSync(join(config.stdout.trim(), 'initdb')))
    return config.stdout.trim();
  throw new Error('own-postgres: no initdb found (install PostgreSQL server binaries)');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone
  }
}

export async function startOwnPostgres(): Promise<OwnPostgres> {
  const bin = binDir();
  const asRoot = process.getuid?.() === 0;
  const ids = asRoot
    ? {
        uid: Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim()),
        gid: Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim()),
      }
    : undefined;
  const dir = mkdtempSync(join(tmpdir(), 'idem-rev20-pg-'));
  if (ids) chownSync(dir, ids.uid, ids.gid);
  const data = join(dir, 'data');
  const port = await freePort();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const init = spawnSync(
    join(bin, 'initdb'),
    ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'],
    { cwd: dir, encoding: 'utf8', ...(ids ?? {}), timeout: 60_000 },
  );
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`own-postgres: initdb failed: ${init.stderr}`);
  }
  let child: ChildProcess | undefined;

  async function answers(): Promise<boolean> {
    const client = new pg.Client({
      connectionString: url,
      connectionTimeoutMillis: 1_000,
      query_timeout: 1_000,
    });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT 1');
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  }

  async function start(): Promise<void> {
    const started = spawn(
      join(bin, 'postgres'),
      [
        '-D',
        data,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'unix_socket_directories=',
        '-c',
        'fsync=on',
        '-c',
        'synchronous_commit=on',
        '-c',
        'max_connections=100',
        '-c',
        'log_min_messages=fatal',
      ],
      { cwd: dir, stdio: 'ignore', ...(ids ?? {}) },
    );
    child = started;
    live.add(started);
    started.once('exit', () => live.delete(started));
    const deadline = performance.now() + 30_000;
    while (!(await answers())) {
      if (started.exitCode !== null) throw new Error(`own-postgres exited ${started.exitCode}`);
      if (performance.now() > deadline) throw new Error('own-postgres did not answer in 30 s');
      await sleep(100);
    }
  }

  const all = (): number[] => (child?.pid ? [child.pid, ...childrenOf(child.pid)] : []);

  async function kill9(): Promise<void> {
    const current = child;
    if (!current?.pid || current.exitCode !== null || current.signalCode !== null) return;
    signalPid(current.pid, 'SIGSTOP');
    const pids = all();
    const exited = new Promise((resolve) => current.once('exit', resolve));
    for (const pid of pids) signalPid(pid, 'SIGKILL');
    await exited;
    const deadline = performance.now() + 5_000;
    while (pids.some(alive) && performance.now() < deadline) await sleep(20);
  }

  await start();
  return {
    port,
    url,
    freeze() {
      const pids = all();
      // The postmaster first, so it forks nothing between the listing and the stop.
      for (const pid of pids) signalPid(pid, 'SIGSTOP');
      for (const pid of all()) signalPid(pid, 'SIGSTOP');
    },
    thaw() {
      for (const pid of all()) signalPid(pid, 'SIGCONT');
    },
    kill9,
    restart: start,
    async destroy() {
      for (const pid of all()) signalPid(pid, 'SIGCONT');
      await kill9();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
