import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import {
  type Child,
  freePort,
  makeTempDir,
  removeTempDir,
  sleep,
  spawnChild,
  waitFor,
} from './processes.js';

/** A PostgreSQL server of the suite's own, on a free loopback port (never the shared 5432). */
export interface PostgresServer {
  port: number;
  /** `postgres://postgres@127.0.0.1:<port>/postgres`: the server itself, not the proxy. */
  url: string;
  /** SIGSTOP to the postmaster, then every backend, by PID: a server that falls silent. */
  freeze(): void;
  /** SIGCONT to every backend, then the postmaster: it answers again. */
  thaw(): void;
  /** SIGKILL to the postmaster and every backend, by PID; resolves once they are gone. */
  kill9(): Promise<void>;
  /**
   * Starts it again on the same port and data; resolves once it serves a read and a write
   * promptly, with the time it first answered a query.
   */
  restart(): Promise<number>;
  /** Fast shutdown (SIGINT; SIGKILL if it does not go) and removes its dir. */
  close(): Promise<void>;
}

/** Where this machine's `initdb` and `postgres` are: `CHAOS_PG_BIN`, `pg_config --bindir`, or Debian's layout. */
function postgresBinDir(): string | undefined {
  const candidates: string[] = [];
  if (process.env.CHAOS_PG_BIN) candidates.push(process.env.CHAOS_PG_BIN);
  const config = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (config.status === 0) candidates.push(config.stdout.trim());
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((v) => join(debian, v, 'bin')));
  }
  return candidates.find(
    (dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres')),
  );
}

/** The uid and gid of `user`, or undefined when there is no such user. */
function idsOf(user: string): { uid: number; gid: number } | undefined {
  const uid = spawnSync('id', ['-u', user], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', user], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) return undefined;
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * PostgreSQL refuses to run as root. As root, the server runs as the `postgres` user
 * (`setpriv --reuid`, which keeps the PID and applies `--pdeathsig` after the switch, so
 * it still dies with the suite); otherwise as the current user.
 */
function runAs(): { user: string; uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const ids = idsOf('postgres');
  if (!ids)
    throw new Error('running as root, and there is no `postgres` user to run PostgreSQL as');
  return { user: 'postgres', ...ids };
}

/** Why a PostgreSQL server cannot start here, or undefined when it can. */
export function postgresUnavailable(): string | undefined {
  const bin = postgresBinDir();
  if (!bin) {
    return 'no initdb/postgres found (install PostgreSQL, or set CHAOS_PG_BIN to its bin dir)';
  }
  try {
    runAs();
  } catch (error) {
    return (error as Error).message;
  }
  return undefined;
}

/** PIDs of the direct children of `pid` (Linux /proc), empty when unreadable. */
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

/** True while `pid` exists and is not a zombie. */
function running(pid: number): boolean {
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
    // Already gone.
  }
}

/** One query on a fresh connection, bounded; true when it answered. */
async function answers(url: string, sql: string, timeoutMs: number): Promise<boolean> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query(sql);
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const READINESS_TABLE = 'chaos_readiness';

/**
 * Resolves once the server serves what the app does promptly: three rounds in a row of a
 * read and a committed write on a fresh connection, each round within 250 ms. That is the
 * moment the store is back for the app, from which recovery is measured (as for DynamoDB
 * Local; PostgreSQL is usually there at the first round once it accepts connections).
 */
async function waitForWrites(
  url: string,
  timeoutMs: number,
  failed: () => string | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const write = `INSERT INTO ${READINESS_TABLE} (k, n) VALUES ('r', 1) ON CONFLICT (k) DO UPDATE SET n = ${READINESS_TABLE}.n + 1`;
  let prompt = 0;
  while (prompt < 3) {
    const why = failed();
    if (why) throw new Error(why);
    const started = Date.now();
    const ok =
      (await answers(url, `SELECT n FROM ${READINESS_TABLE} WHERE k = 'r'`, 1_000)) &&
      (await answers(url, write, 1_000)) &&
      Date.now() - started <= 250;
    prompt = ok ? prompt + 1 : 0;
    if (Date.now() > deadline) throw new Error(`PostgreSQL on ${url} did not serve writes in time`);
    if (!ok) await sleep(50);
  }
}

/**
 * initdb into a temp dir and start `postgres` on a free port of 127.0.0.1 (trust auth, no
 * Unix socket, `fsync` and `synchronous_commit` on, so a kill -9 keeps every committed
 * write), then wait until it serves reads and writes.
 */
export async function startPostgres(): Promise<PostgresServer> {
  const bin = postgresBinDir();
  if (!bin) throw new Error(postgresUnavailable());
  const owner = runAs();
  const port = await freePort();
  const dir = makeTempDir('idem-chaos-postgres-');
  if (owner) chownSync(dir, owner.uid, owner.gid);
  const data = join(dir, 'data');
  const user = owner
    ? ['--reuid', String(owner.uid), '--regid', String(owner.gid), '--init-groups']
    : [];
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;

  const initdb = spawnChild(
    `initdb:${port}`,
    join(bin, 'initdb'),
    ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C'],
    { cwd: dir, asUser: user },
  );
  const code = await Promise.race([initdb.exited, sleep(60_000).then(() => 'timeout')]);
  if (code !== 0) {
    initdb.signal('SIGKILL');
    removeTempDir(dir);
    throw new Error(`initdb exited ${code}:\n${initdb.output()}`);
  }

  const args = [
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
    'max_connections=200',
    // Crash recovery syncs the data dir before replaying the WAL; syncfs does it in one call
    // where the default opens and fsyncs every file (1.5 s of a 1.8 s restart here).
    '-c',
    'recovery_init_sync_method=syncfs',
    '-c',
    'log_min_messages=warning',
  ];
  let child: Child | undefined;
  const start = async () => {
    const current = spawnChild(`postgres:${port}`, join(bin, 'postgres'), args, {
      cwd: dir,
      asUser: user,
    });
    child = current;
    const failed = () =>
      current.done ? `postgres on ${port} exited:\n${current.output()}` : undefined;
    await waitFor(
      async () => {
        const why = failed();
        if (why) throw new Error(why);
        return answers(url, 'SELECT 1', 1_000);
      },
      30_000,
      () => `postgres on ${port} did not answer:\n${current.output()}`,
    );
    const answeredAt = Date.now();
    const schema = `CREATE TABLE IF NOT EXISTS ${READINESS_TABLE} (k text PRIMARY KEY, n bigint NOT NULL)`;
    if (!(await answers(url, schema, 5_000)))
      throw new Error(`postgres on ${port}: ${schema} failed`);
    await waitForWrites(url, 30_000, failed);
    return answeredAt;
  };
  const killAll = async () => {
    const current = child;
    if (!current || current.done) return;
    // Frozen first, so it forks no backend between the listing and the kill.
    current.signal('SIGSTOP');
    const backends = childrenOf(current.pid);
    current.signal('SIGKILL');
    for (const pid of backends) signalPid(pid, 'SIGKILL');
    await current.exited;
    // A new postmaster refuses the data dir while an old backend still holds its memory.
    await waitFor(
      () => !backends.some(running),
      5_000,
      () => `backends of postgres on ${port} still running`,
    );
  };

  try {
    await start();
  } catch (error) {
    await killAll();
    removeTempDir(dir);
    throw error;
  }
  return {
    port,
    url,
    freeze() {
      const current = child;
      if (!current || current.done) return;
      // The postmaster first, so it forks nothing between the listing and the stop.
      current.signal('SIGSTOP');
      for (const pid of childrenOf(current.pid)) signalPid(pid, 'SIGSTOP');
    },
    thaw() {
      const current = child;
      if (!current || current.done) return;
      for (const pid of childrenOf(current.pid)) signalPid(pid, 'SIGCONT');
      current.signal('SIGCONT');
    },
    kill9: killAll,
    restart: start,
    async close() {
      const current = child;
      if (current && !current.done) {
        // Fast shutdown: ends the sessions (SIGTERM would wait for every client to leave).
        current.signal('SIGINT');
        const gone = await Promise.race([current.exited.then(() => true), sleep(5_000)]);
        if (!gone) await killAll();
      }
      removeTempDir(dir);
    },
  };
}
