import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A redis-server of the test's own, on a free loopback port, that the test may kill -9,
 * restart on the same port, or freeze (SIGSTOP) to make its connections go silent. Never
 * the shared Redis: fault tests must not touch what other suites use.
 */
export interface OwnRedis {
  readonly port: number;
  readonly url: string;
  /** PID of the running redis-server (changes on restart). */
  readonly pid: number;
  /** kill -9: connections drop at once, nothing is flushed. */
  kill(): Promise<void>;
  /** Starts it again on the same port and resolves once it answers PING. */
  restart(): Promise<void>;
  /** SIGSTOP: connections stay open but nothing answers. */
  freeze(): void;
  /** SIGCONT after {@link freeze}. */
  thaw(): void;
  /** Stops it for good and removes its directory. */
  stop(): Promise<void>;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** Answers whether something replies `+PONG` to a PING on `port`, within `timeoutMs`. */
function pong(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.on('data', (data) => done(data.toString().startsWith('+PONG')));
    socket.connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts `redis-server` on a free port. `args` are extra server options, e.g.
 * `['--appendonly', 'yes']`; by default it keeps nothing on disk. Fails with a message that
 * says how to install it when the binary is missing.
 */
export async function startOwnRedis(args: readonly string[] = []): Promise<OwnRedis> {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      'These tests start their own redis-server and none is on PATH ' +
        '(apt-get install redis-server, or brew install redis).',
    );
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'llm-api-redis-'));
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  async function launch(): Promise<void> {
    const options = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir];
    const persistence = args.length > 0 ? args : ['--save', '', '--appendonly', 'no'];
    const started = spawn('redis-server', [...options, ...persistence], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    started.stdout?.on('data', (d: Buffer) => {
      output = (output + d.toString()).slice(-2_000);
    });
    started.stderr?.on('data', (d: Buffer) => {
      output = (output + d.toString()).slice(-2_000);
    });
    let gone = false;
    exited = new Promise((resolve) =>
      started.once('exit', () => {
        gone = true;
        resolve();
      }),
    );
    child = started;
    for (let i = 0; i < 100; i += 1) {
      if (gone) throw new Error(`redis-server on port ${port} exited:\n${output}`);
      if (await pong(port)) return;
      await sleep(50);
    }
    throw new Error(`redis-server on port ${port} did not answer PING:\n${output}`);
  }

  async function kill(): Promise<void> {
    child?.kill('SIGKILL');
    await exited;
  }

  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return child?.pid ?? -1;
    },
    kill,
    restart: launch,
    freeze: () => child?.kill('SIGSTOP'),
    thaw: () => child?.kill('SIGCONT'),
    stop: async () => {
      child?.kill('SIGCONT');
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
