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
import {
  createServer,
  request as h1Request,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { type ClientHttp2Session, constants, createServer as createH2cServer } from 'node:http2';
import { createMemoryLiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { withIdempotency } from '../../src/index.js';
import { closeAll, listenLoopback, recordedHandler, session } from '../support/h2c.js';
import { webNodeHandler } from './web-server.js';

const problems: string[] = [];
process.on('unhandledRejection', (error) => problems.push(String(error)));
process.on('uncaughtException', (error) => problems.push(String(error)));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const bounded = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([promise, sleep(ms).then(() => 'hung' as const)]);
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

  interface Opened {
    first: Promise<void>;
    done: Promise<string>;
    leave(): void;
  }

  function open(extra: Record<string, string> = {}): Opened {
    let first = () => {};
    const firstCame = new Promise<void>((resolve) => {
      first = resolve;
    });
    const headers = { 'idempotency-key': 'k', 'content-type': 'application/json', ...extra };
    if (client) {
      const stream = client.request({ ':method': 'POST', ':path': '/', ...headers });
      let status = 0;
      let replayed = false;
      let body = '';
      let ended = false;
      const done = new Promise<string>((resolve) => {
        stream.on('response', (h) => {
          status = Number(h[':status']);
          replayed = h['idempotent-replayed'] === 'true';
        });
        stream.on('data', (chunk: Buffer) => {
          body += chunk.toString();
          first();
        });
        stream.on('end', () => {
          ended = true;
        });
        stream.on('error', () => {});
        stream.on('close', () =>
          resolve(
            `${status} replayed=${replayed} ${JSON.stringify(body)} ${ended && stream.rstCode === 0 ? 'ended' : 'broken'}`,
          ),
        );
      });
      stream.end('{}');
      return { first: firstCame, done, leave: () => stream.close(constants.NGHTTP2_CANCEL) };
    }
    let req: ReturnType<typeof h1Request> | undefined;
    const done = new Promise<string>((resolve) => {
      req = h1Request({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/',
        agent: false,
        headers,
      });
      req.on('error', () => resolve('broken'));
      req.on('response', (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => {
          body += chunk.toString();
          first();
        });
        const replayed = res.headers['idempotent-replayed'] === 'true';
        const seen = (end: string) =>
          resolve(`${res.statusCode} replayed=${replayed} ${JSON.stringify(body)} ${end}`);
        res.on('end', () => seen(res.complete ? 'ended' : 'broken'));
        res.on('error', () => seen('broken'));
        res.on('close', () => seen('broken'));
      });
      req.end('{}');
    });
    return { first: firstCame, done, leave: () => req?.destroy() };
  }

  const first = open();
  await bounded(first.first, 3_000);
  const attached = open();
  await bounded(attached.first, 3_000);
  first.leave();
  const reader = await bounded(attached.done, 3_000);
  // Released at once: the retry runs again (it would attach, or get 409, while in progress).
  await sleep(50);
  const retry = await bounded(open({ 'x-quick': '1' }).done, 3_000);
  return { reader, retry, runs: runs() };
}

for (const bed of (process.env.BEDS ?? '').split(',')) {
  const [path, protocol] = bed.split(':');
  const { reader, retry, runs } = await run(path === 'node' ? 'node' : 'web', protocol === 'h2c');
  console.log(JSON.stringify({ bed, reader, retry, runs, problems: problems.splice(0) }));
  await closeAll();
}
process.exit(0);
