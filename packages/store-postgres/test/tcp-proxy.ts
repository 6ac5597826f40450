import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy in front of PostgreSQL that can fall silent (keeps every connection
 * open but forwards nothing, as a frozen server or a blackholed network does), refuse
 * (drops every connection and new ones, as a server that went down), hold the answers
 * (forwards what clients send, keeps what the server sends back until `releaseHeld`: a
 * return path that stalls), or blackhole (silent, and a connection the server closes stays
 * open on the client's side, as no FIN crosses a partition; in `silent` mode the proxy
 * still closes the client's side then). `hold-answers` keeps the client's side open too.
 */
export interface TcpProxy {
  port: number;
  mode: 'pass' | 'silent' | 'refuse' | 'hold-answers' | 'blackhole';
  /** Delivers every answer held in `hold-answers` mode, whatever the mode now. */
  releaseHeld(): void;
  close(): Promise<void>;
}

export async function startProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<[Socket, Socket]>();
  const held: [Socket, Buffer][] = [];
  const proxy: TcpProxy = {
    port: 0,
    mode: 'pass',
    releaseHeld() {
      for (const [to, chunk] of held.splice(0)) if (!to.destroyed) to.write(chunk);
    },
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
    const forward = (from: Socket, to: Socket, answers: boolean) =>
      from.on('data', (chunk: Buffer) => {
        if (proxy.mode === 'pass' || (proxy.mode === 'hold-answers' && !answers)) to.write(chunk);
        else if (proxy.mode === 'hold-answers') held.push([to, chunk]);
        else if (proxy.mode === 'refuse') {
          client.destroy();
          upstream.destroy();
        }
        // silent: swallowed
      });
    forward(client, upstream, false);
    forward(upstream, client, true);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    // The server's side closed: nothing reaches the client across a partition (the pair stays
    // listed, so that close() ends the client's side).
    const upstreamEnded = () => {
      if (proxy.mode === 'blackhole' || proxy.mode === 'hold-answers') upstream.destroy();
      else end();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', upstreamEnded).on('error', upstreamEnded);
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
