import { type ChildProcess, fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** A Node child process running one of the suite's TypeScript entries, with IPC. */
export interface TsChild<Ready> {
  child: ChildProcess;
  /** The first message the child sent (it sends one once it is ready). */
  ready: Ready;
  /** Sends a message if the child is still connected. */
  send(message: unknown): void;
  /** Resolves once the child has exited. */
  exited: Promise<void>;
  /** Sends `closeMessage`, then SIGKILL after 3 s; resolves once it has exited. */
  close(closeMessage: unknown): Promise<void>;
}

/**
 * Forks `entry` (a .ts file next to this one, run through tsx) with `args`, and waits (at
 * most 20 s) for its first message. The child must exit when its IPC channel closes, so it
 * never outlives the suite.
 */
export async function forkTsChild<Ready>(
  entry: string,
  args: readonly string[],
): Promise<TsChild<Ready>> {
  const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  const path = fileURLToPath(new URL(entry, import.meta.url));
  const child = fork(path, [...args], {
    execArgv: ['--import', loader],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = await new Promise<Ready>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${entry} did not start in 20 s`));
    }, 20_000);
    child.once('message', (message: Ready) => {
      clearTimeout(timer);
      resolve(message);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${entry} exited (${code}) before it was ready`));
    });
  });
  const send = (message: unknown) => {
    if (child.connected) child.send(message as never);
  };
  return {
    child,
    ready,
    send,
    exited,
    async close(closeMessage) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      send(closeMessage);
      const killer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(killer);
    },
  };
}
