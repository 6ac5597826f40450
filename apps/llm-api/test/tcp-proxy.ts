import { createServer, Socket } from 'node:net';

/**
 * A loopback TCP proxy in front of a store that the test can make misbehave:
 * - `pass`: bytes flow both ways;
 * - `silent`: connections stay open (old and new) but no byte moves either way, as with a
 *   frozen server or a blackholed network; bytes wait in the kernel buffers and flow again
 *   on `pass`, as TCP retransmission would deliver them;
 * - `down`: every connection is reset and new ones are reset at once, as when the store
 *   process died.
 */
export interface TcpProxy {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  set(mode: 'pass' | 'silent' | 'down'): void;
  close(): Promise<void>;
}

/** Starts the proxy on a free loopback port, forwarding to `target` (`http://host:port`). */
export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const url = new URL(target);
  const hostname = url.hostname;
  const targetPort = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  let mode: 'pass' | 'silent' | 'down' = 'pass';
  const pairs = new Set<[Socket, Socket]>();
  let accepted = 0;

  const apply = ([client, upstream]: [Socket, Socket]) => {
    if (mode === 'down') {
      client.resetAndDestroy();
      upstream.destroy();
    } else if (mode === 'silent') {
      client.pause();
      upstream.pause();
    } else {
      client.resume();
      upstream.resume();
    }
  };

  const server = createServer((client) => {
    accepted += 1;
    const upstream = new Socket();
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    // Plain 'data' forwarding (no pipe, which may resume a paused source on drain).
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk) => client.write(chunk));
    upstream.connect(targetPort, hostname);
    apply(pair);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get accepted() {
      return accepted;
    },
    set(next) {
      mode = next;
      for (const pair of [...pairs]) apply(pair);
    },
    close: () =>
      new Promise((resolve) => {
        for (const [client, upstream] of pairs) {
          client.destroy();
          upstream.destroy();
        }
        server.close(() => resolve());
      }),
  };
}
