/**
 * A TCP proxy on the loopback interface that can lose an answer: the request reaches the
 * server and is applied, then the proxy swallows the reply and closes the connection, as a
 * network failure between the two would. The client library sees a dropped connection and
 * (ioredis by default) reconnects and resends what was left unanswered.
 */
import { once } from 'node:events';
import { createServer, type Socket, connect as tcpConnect } from 'node:net';

export interface LostAnswerProxy {
  /** The port clients connect to. */
  readonly port: number;
  /** Answers swallowed so far. */
  readonly lost: number;
  /** Client connections accepted so far. */
  readonly connections: number;
  /** The next answer any connection receives is swallowed and that connection is closed. */
  loseNextAnswer(): void;
  close(): Promise<void>;
}

export async function startLostAnswerProxy(upstreamPort: number): Promise<LostAnswerProxy> {
  let armed = 0;
  let lost = 0;
  let connections = 0;
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const server = createServer((client) => {
    connections++;
    track(client);
    const upstream = tcpConnect({ host: '127.0.0.1', port: upstreamPort });
    track(upstream);
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk) => {
      if (armed > 0) {
        armed--;
        lost++;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('proxy has no port');
  return {
    port: address.port,
    get lost() {
      return lost;
    },
    get connections() {
      return connections;
    },
    loseNextAnswer() {
      armed++;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}
