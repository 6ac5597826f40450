import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A child process the suite started; it is stopped by its PID, never by name. */
export interface Child {
  name: string;
  pid: number;
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  exited: Promise<number | string>;
  /** True once the process has exited. */
  readonly done: boolean;
  /** The last few KiB it printed (stdout and stderr). */
  output(): string;
  /** Sends `signal` to this PID if it is still running. */
  signal(signal: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<number | string>;
}

const live = new Set<Child>();
const tempDirs = new Set<string>();

/** A fresh temp dir, removed by {@link removeTempDir} or, at the latest, when the suite ends. */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Removes a dir made by {@link makeTempDir}. */
export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

let deathSignal: string[] | undefined;

/**
 * The prefix that makes a child die with the suite (Linux: `setpriv --pdeathsig KILL`, which
 * then execs the command under the same PID), or none where it is unavailable. Without it, a
 * suite killed by a signal it cannot handle (SIGKILL, an OOM kill) left its redis-servers,
 * DynamoDB Local and app instances running.
 */
function dieWithSuite(): string[] {
  if (deathSignal === undefined) {
    const probe = spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true'], { stdio: 'ignore' });
    deathSignal = probe.status === 0 ? ['setpriv', '--pdeathsig', 'KILL', '--'] : [];
  }
  return deathSignal;
}

/**
 * Starts `command` with `args`, keeps a tail of its output, and registers it so that
 * {@link stopAllChildren} (called on exit, failure, SIGINT, SIGTERM and SIGHUP) kills it by
 * PID. It is killed with the suite too, should the suite die without running any of that
 * (see {@link dieWithSuite}).
 */
export function spawnChild(
  name: string,
  command: string,
  args: readonly string[],
  options: {
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    /** `setpriv` options that run it as another user (e.g. `--reuid`), applied with the death signal. */
    asUser?: readonly string[];
  } = {},
): Child {
  const asUser = options.asUser ?? [];
  // One setpriv for both: a uid change after --pdeathsig (a second setpriv) would clear it.
  const prefix =
    asUser.length === 0
      ? dieWithSuite()
      : dieWithSuite().length > 0
        ? [...dieWithSuite().slice(0, -1), ...asUser, '--']
        : ['setpriv', ...asUser, '--'];
  // The death signal is set in the child, after the fork: a suite killed in between (the
  // postgres-kill row restarts its server while the suite may be SIGKILLed) left that one
  // child running with no signal to come. A shell run under the signal checks that its
  // parent is still the suite before it execs the command (same PID), which closes the gap.
  const guard =
    dieWithSuite().length > 0
      ? [
          '/bin/sh',
          '-c',
          'if [ "$PPID" != "$0" ]; then exit 70; fi; exec "$@"',
          String(process.pid),
        ]
      : [];
  const [wrapper, ...wrapperArgs] = [...prefix, ...guard, command, ...args] as [
    string,
    ...string[],
  ];
  const proc: ChildProcess = spawn(wrapper, wrapperArgs, {
    env: options.env ?? process.env,
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (proc.pid === undefined) throw new Error(`${name}: ${command} could not be started`);
  let tail = '';
  const keep = (data: Buffer) => {
    tail = (tail + data.toString()).slice(-8_000);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  let done = false;
  const exited = new Promise<number | string>((resolve) => {
    proc.once('exit', (code, signal) => {
      done = true;
      live.delete(child);
      resolve(code ?? signal ?? 'unknown');
    });
    proc.once('error', (error) => {
      done = true;
      live.delete(child);
      keep(Buffer.from(`\n${name}: ${error.message}\n`));
      resolve('spawn-error');
    });
  });
  const pid = proc.pid;
  const child: Child = {
    name,
    pid,
    exited,
    get done() {
      return done;
    },
    output: () => tail,
    signal(signal) {
      if (done) return;
      try {
        process.kill(pid, signal);
      } catch {
        // Already gone.
      }
    },
    async stop(graceMs = 5_000) {
      child.signal('SIGTERM');
      const timer = setTimeout(() => child.signal('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  live.add(child);
  return child;
}

/**
 * Kills every child still running with SIGKILL, by PID, waits (bounded) for them, and
 * removes the temp dirs left.
 */
export async function stopAllChildren(): Promise<void> {
  const children = [...live];
  for (const child of children) child.signal('SIGKILL');
  await Promise.race([
    Promise.all(children.map((c) => c.exited)),
    new Promise((resolve) => setTimeout(resolve, 3_000)),
  ]);
  for (const dir of [...tempDirs]) removeTempDir(dir);
}

// Last resort: a crash of the suite itself never leaves a Redis or an app running.
process.on('exit', () => {
  for (const child of live) child.signal('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

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

/** Resident set size of a PID in MiB (Linux `/proc`), or undefined when unreadable. */
export function rssMiB(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = status.match(/^VmRSS:\s+(\d+)\s+kB/m)?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined;
  }
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` every `everyMs` until it returns true; throws `message` after `timeoutMs`. */
export async function waitFor(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  message: () => string,
  everyMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(everyMs);
  }
  throw new Error(message());
}
