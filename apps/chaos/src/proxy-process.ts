import { type ChildProcess, fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ProxyMode } from './tcp-fault-proxy.js';

/** What the suite sends the proxy process. */
export type ProxyCommand =
  | { op: 'mode'; mode: ProxyMode }
  | { op: 'drop-some'; fraction: number }
  | { op: 'close' };

/** The fault proxy, run in a process of its own; commands take effect in the order sent. */
export interface ProxyProcess {
  port: number;
  pid: number;
  setMode(mode: ProxyMode): void;
  /** Resets each open connection with probability `fraction`. */
  dropSome(fraction: number): void;
  close(): Promise<void>;
}

/**
 * Starts the TCP fault proxy in front of 127.0.0.1:`targetPort` in its own Node process, so
 * forwarding never waits behind the suite's clients on one event loop: when the machine is
 * busy, a store that is back is reachable at once, and recovery measures the app.
 */
export async function startProxyProcess(targetPort: number): Promise<ProxyProcess> {
  const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  const entry = fileURLToPath(new URL('./proxy-child.ts', import.meta.url));
  const child: ChildProcess = fork(entry, [String(targetPort)], {
    execArgv: ['--import', loader],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('the fault proxy did not start in 20 s')),
      20_000,
    );
    child.once('message', (message: { port: number }) => {
      clearTimeout(timer);
      resolve(message.port);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the fault proxy exited (${code}) before listening`));
    });
  });
  const send = (command: ProxyCommand) => {
    if (child.connected) child.send(command);
  };
  return {
    port,
    pid: child.pid as number,
    setMode: (mode) => send({ op: 'mode', mode }),
    dropSome: (fraction) => send({ op: 'drop-some', fraction }),
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      send({ op: 'close' });
      const killer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(killer);
    },
  };
}
