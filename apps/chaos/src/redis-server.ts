import { connect } from 'node:net';
import {
  type Child,
  freePort,
  makeTempDir,
  removeTempDir,
  spawnChild,
  waitFor,
} from './processes.js';

/** A redis-server of the suite's own, on a free loopback port (never the shared 6379). */
export interface RedisServer {
  port: number;
  /** AOF with `appendfsync always` in a temp dir, or nothing on disk at all. */
  persistent: boolean;
  /** kill -9 by PID; resolves once the process has exited. */
  kill9(): Promise<void>;
  /** Starts it again on the same port and dir; resolves once it answers PING. */
  /** Resolves once it answers PING, with that time. */
  restart(): Promise<number>;
  /** Stops it (SIGKILL if it does not go) and removes its dir. */
  close(): Promise<void>;
}

/** Sends one inline PING and resolves true on `+PONG` (false on anything else, e.g. LOADING). */
export function redisPing(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.on('error', () => finish(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => {
      reply += data.toString();
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG'));
    });
  });
}

/** Starts redis-server with or without persistence and waits until it answers. */
export async function startRedis(persistent: boolean): Promise<RedisServer> {
  const port = await freePort();
  const dir = makeTempDir('idem-chaos-redis-');
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--daemonize',
    'no',
    '--logfile',
    '',
    ...(persistent ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
  ];
  let child: Child | undefined;
  const start = async () => {
    child = spawnChild(`redis-server:${port}`, 'redis-server', args);
    const current = child;
    await waitFor(
      async () => {
        if (current.done) {
          throw new Error(`redis-server exited at start:\n${current.output()}`);
        }
        return redisPing(port);
      },
      15_000,
      () => `redis-server on ${port} did not answer PING:\n${current.output()}`,
    );
    return Date.now();
  };
  await start();
  return {
    port,
    persistent,
    async kill9() {
      if (!child) return;
      child.signal('SIGKILL');
      await child.exited;
    },
    restart: start,
    async close() {
      if (child && !child.done) await child.stop(2_000);
      removeTempDir(dir);
    },
  };
}
