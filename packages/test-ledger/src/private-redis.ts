import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';

/** A throwaway redis-server of one test, on its own loopback port, stopped by its PID. */
export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  /** Kills the server (SIGKILL, by PID): an outage. Its data is gone (no persistence). */
  stop(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  /** Freezes the server (SIGSTOP, by PID): connections stay open, nothing is answered. */
  freeze(): void;
  /** Lets a frozen server go on (SIGCONT): what it was sent meanwhile is then answered. */
  thaw(): void;
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });

/** Starts a private redis-server (needs `redis-server` on PATH) for store-outage tests. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const spawnServer = () => {
    child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    child.once('error', () => {});
  };
  const start = async () => {
    spawnServer();
    // Up to 10 s on a loaded machine. A server that exited at once (its port taken for a
    // moment, as the source port of some other loopback connection) is started again.
    for (let attempt = 0; attempt < 200; attempt++) {
      if (child?.exitCode !== null || child?.signalCode !== null) spawnServer();
      const probe = new Redis({
        port,
        host: '127.0.0.1',
        lazyConnect: true,
        retryStrategy: () => null,
      });
      probe.on('error', () => {}); // refused until the server listens
      const up = await probe.connect().then(
        () => true,
        () => false,
      );
      probe.disconnect();
      if (up) return;
      await sleep(50);
    }
    throw new Error(`redis-server did not answer on port ${port}: is redis-server on PATH?`);
  };
  await start();
  const signal = (name: 'SIGSTOP' | 'SIGCONT') => {
    if (child?.pid && child.exitCode === null && child.signalCode === null)
      process.kill(child.pid, name);
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    start,
    freeze: () => signal('SIGSTOP'),
    thaw: () => signal('SIGCONT'),
    async stop() {
      const running = child;
      // Killed already (a signal sets signalCode, not exitCode): a second kill would be ESRCH.
      if (!running?.pid || running.exitCode !== null || running.signalCode !== null) return;
      const exited = once(running, 'exit');
      process.kill(running.pid, 'SIGKILL');
      await exited;
    },
  };
}
