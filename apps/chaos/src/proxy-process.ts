import type { ProxyMode } from './tcp-fault-proxy.js';
import { forkTsChild } from './ts-child.js';

/** What the suite sends the proxy process. */
export type ProxyCommand =
  | { op: 'mode'; mode: ProxyMode }
  | { op: 'drop-some'; fraction: number }
  | { op: 'close' };

/** The fault proxy, run in a process of its own; commands take effect in the order sent. */
export interface ProxyProcess {
  port: number;
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
  const proxy = await forkTsChild<{ port: number }>('./proxy-child.ts', [String(targetPort)]);
  const send = (command: ProxyCommand) => proxy.send(command);
  return {
    port: proxy.ready.port,
    setMode: (mode) => send({ op: 'mode', mode }),
    dropSome: (fraction) => send({ op: 'drop-some', fraction }),
    close: () => proxy.close({ op: 'close' } satisfies ProxyCommand),
  };
}
