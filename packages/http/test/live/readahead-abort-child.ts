/**
 * Run through tsx by `live-readahead-interrupt.test.ts`, in a process of its own: when it
 * fails, the server's process spins (node:http2 loops in `submitRstStream` when a stream is
 * reset while the session still handles the client's RST_STREAM of another: Node 20.20, see
 * nodejs/node#52952), so its parent kills it. A live stream with a reader attached over the
 * same connection (HTTP/2: the same session) whose first client leaves, and whose app stops
 * its body at once, in the same tick (it aborts its upstream on the request's signal, Web
 * path, or destroys its response from the request's 'close', Node path). Env: PATH_KIND
 * (web | node), PROTO (h1 | h2c). Prints one JSON line: how the attached reader ended, the
 * retry's answer, the runs, and any unhandled error.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type ClientHttp2Session, createServer as createH2cServer } from 'node:http2';
import { createMemoryLiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { withIdempotency } from '../../src/index.js';
import { closeAll, listenLoopback, recordedHandler, session } from '../support/h2c.js';
import { firstLeaves, openKeyed } from './keyed-open.js';
import { webNodeHandler } from './web-server.js';

const problems: string[] = [];
process.on('unhandledRejection', (error) => problems.push(String(error)));
process.on('uncaughtException', (error) => problems.push(String(error)));
const encoder = new TextEncoder();
async function run(path: 'web' | 'node', h2: boolean) {
  const options = {
    store: createMemoryStore(),
    scope: 'global' as const,
    onWarning: () => {},
    liveStreams: { channel: createMemoryLiveStreams() },
  };

  let handle: (req: IncomingMessage, res: ServerResponse) => unknown;
  let runs: () => number;
  if (path === 'web') {
    let count = 0;
    runs = () => count;
    const app = withIdempotency(async (request) => {
      count++;
      const quick = request.headers.get('x-quick') !== null;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(encoder.encode('data: 1\n\n'));
          if (quick) controller.close();
          // The app's upstream, aborted on the request's signal: the body breaks at once.
          else
            request.signal.addEventListener('abort', () =>
              controller.error(new Error('upstream aborted')),
            );
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    }, options);
    handle = webNodeHandler(app);
  } else {
    const recorded = recordedHandler(async (req, res) => {
      res.on('error', () => {});
      // The app stops its upstream when the client leaves, and its response with it.
      req.on('close', () => res.destroy(new Error('upstream aborted')));
      res.setHeader('content-type', 'text/event-stream');
      res.write('data: 1\n\n');
      if (req.headers['x-quick']) res.end();
    }, options);
    handle = recorded.handle;
    runs = recorded.runs;
  }

  const port = await listenLoopback(h2 ? createH2cServer(handle as never) : createServer(handle));
  const client: ClientHttp2Session | undefined = h2 ? session(port) : undefined;

  const { reader, retry } = await firstLeaves((extra) => openKeyed(port, client, extra));
  return { reader, retry, runs: runs() };
}

for (const bed of (process.env.BEDS ?? '').split(',')) {
  const [path, protocol] = bed.split(':');
  const { reader, retry, runs } = await run(path === 'node' ? 'node' : 'web', protocol === 'h2c');
  console.log(JSON.stringify({ bed, reader, retry, runs, problems: problems.splice(0) }));
  await closeAll();
}
process.exit(0);
