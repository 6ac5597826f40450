import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy in front of PostgreSQL that can fall silent (keeps every connection
 * open but forwards nothing, as a frozen server or a blackholed network does) or refuse
 * (drops every connection and new ones, as a server that went down).
 */
export interface TcpProxy {
  port: number;
  mode: 'pass' | 'silent' | 'refuse';
  close(): Promise<void>;
}

export async function startProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<[Socket, Socket]>();
  const proxy: TcpProxy = {
    port: 0,
    mode: 'pass',
    async close() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      server.close();
    },
  };
  const server: Server = createServer((client) => {
    if (proxy.mode === 'refuse') {
      client.destroy();
      return;
    }
    const upstream = createConnection(target);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const forward = (from: Socket, to: Socket) =>
      from.on('data', (chunk) => {
        if (proxy.mode === 'pass') to.write(chunk);
        else if (proxy.mode === 'refuse') {
          client.destroy();
          upstream.destroy();
        }
        // silent: swallowed
      });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  proxy.port = (server.address() as { port: number }).port;
  const refuse = () => {
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
  };
  return new Proxy(proxy, {
    set(target, property, value) {
      (target as unknown as Record<string | symbol, unknown>)[property] = value;
      if (property === 'mode' && value === 'refuse') refuse();
      return true;
    },
  });
}
