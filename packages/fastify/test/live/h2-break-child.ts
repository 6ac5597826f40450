/**
 * Run through tsx by `fastify-h2-live-reset.test.ts`, in a process of its own: when it fails,
 * the server's process spins (node:http2 loops in `submitRstStream` when a stream is reset
 * while the session still handles the client's RST_STREAM of another: Node 20.20, see
 * nodejs/node#52952), so its parent kills it. A Fastify app (`http2: true` for h2c) whose
 * live stream has a reader attached over the same connection (HTTP/2: the same session); its
 * first client leaves, and the app stops its body at once, in the same tick (it aborts its
 * upstream on the request's 'close': a Node stream the app destroys, `node`, or a Web stream it
 * errors, `web`), or 100 ms later (`late`). Env BEDS: `kind:proto[:late]` (kind node | web,
 * proto h1 | h2c), comma-separated. Prints one JSON line per bed: how the attached reader
 * ended, the retry's answer, the runs, the channel's stats after, and any unhandled error.
 */
import { type ClientHttp2Session, connect } from 'node:http2';
import { Readable } from 'node:stream';
import { createMemoryLiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { firstLeaves, openKeyed } from '../../../http/test/live/keyed-open.js';
import { idempotency } from '../../src/index.js';

const problems: string[] = [];
process.on('unhandledRejection', (error) => problems.push(String(error)));
process.on('uncaughtException', (error) => problems.push(String(error)));
const encoder = new TextEncoder();

async function run(kind: 'node' | 'web', h2: boolean, late: boolean) {
  const channel = createMemoryLiveStreams();
  const app = h2
    ? (Fastify({ http2: true }) as unknown as FastifyInstance)
    : Fastify({ forceCloseConnections: true });
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
    liveStreams: { channel },
  });
  let runs = 0;
  app.post('/', async (request, reply) => {
    runs++;
    const quick = request.headers['x-quick'] !== undefined;
    // The app's upstream, aborted when its client leaves: the body breaks. HTTP/2: the
    // request's 'close' (its stream's); HTTP/1.1: its socket's 'end' (the request's 'close'
    // came with its body's end, and Node holds the socket half-open while the answer goes on).
    const abort = (stop: () => void) => {
      const then = () => (late ? setTimeout(stop, 100) : stop());
      if (h2) request.raw.once('close', then);
      else request.raw.socket.once('end', then);
    };
    reply.type('text/event-stream');
    if (kind === 'web') {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(encoder.encode('data: 1\n\n'));
          if (quick) controller.close();
          else abort(() => controller.error(new Error('upstream aborted')));
        },
      });
      return reply.send(body);
    }
    const body = new Readable({ read() {} });
    body.push('data: 1\n\n');
    if (quick) body.push(null);
    else abort(() => body.destroy(new Error('upstream aborted')));
    return reply.send(body);
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  let client: ClientHttp2Session | undefined;
  if (h2) {
    client = connect(`http://127.0.0.1:${port}`);
    client.on('error', () => {});
  }

  const { reader, retry } = await firstLeaves((extra) => openKeyed(port, client, extra));
  client?.destroy();
  await Promise.race([app.close(), new Promise((resolve) => setTimeout(resolve, 3_000))]);
  return { reader, retry, runs, stats: channel.stats() };
}

for (const bed of (process.env.BEDS ?? '').split(',')) {
  const [kind, protocol, when] = bed.split(':');
  const ran = await run(kind === 'node' ? 'node' : 'web', protocol === 'h2c', when === 'late');
  console.log(JSON.stringify({ bed, ...ran, problems: problems.splice(0) }));
}
process.exit(0);
