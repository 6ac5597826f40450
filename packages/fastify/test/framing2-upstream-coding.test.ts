// @idem/fastify: an onRequest hook puts a Transfer-Encoding that is not Node's own chunked
// (`gzip`, `gzip, chunked`) on the reply (`reply.header`) or on the Node response under it
// (`reply.raw.setHeader`). A replay is framed by its own body, and a request pipelined behind
// it on the kept-alive connection is answered (framing2). A keyed HEAD (methods with GET and
// HEAD; Fastify's HEAD route of a GET): no body bytes, the pipelined request read after it.
import { Readable } from 'node:stream';
import {
  describeHeadReplay,
  describeUpstreamFraming,
  type FramingApp,
  framingAppOptions,
} from '@idem/http-conformance';
import Fastify from 'fastify';
import { idempotency } from '../src/index.js';

async function start(raw: boolean, head = false): Promise<FramingApp> {
  let runs = 0;
  const app = Fastify();
  await app.register(idempotency, framingAppOptions(head));
  app.addHook('onRequest', async (request, reply) => {
    const coding = request.headers['x-framing'];
    if (typeof coding !== 'string') return;
    if (raw) reply.raw.setHeader('transfer-encoding', coding);
    else reply.header('transfer-encoding', coding);
  });
  app.post('/stream', async (_request, reply) => {
    runs++;
    const chunks = ['alpha-', 'beta-', 'gamma'];
    reply.type('text/plain');
    return reply.send(
      new Readable({
        read() {
          const chunk = chunks.shift();
          if (chunk === undefined) this.push(null);
          else setTimeout(() => this.push(chunk), 5);
        },
      }),
    );
  });
  app.post('/whole', async (_request, reply) => {
    runs++;
    return reply.type('text/plain').send('whole-body');
  });
  app.get('/doc', async (_request, reply) => {
    runs++;
    return reply.type('text/plain').send('document-body');
  });
  app.get('/ping', async (_request, reply) => reply.type('text/plain').send('pong'));
  await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    url: `http://127.0.0.1:${(app.server.address() as { port: number }).port}`,
    runs: () => runs,
    close: () => app.close(),
  };
}

describeUpstreamFraming('Fastify (reply.header)', () => start(false));
describeUpstreamFraming('Fastify (reply.raw.setHeader)', () => start(true));
describeHeadReplay('Fastify (reply.header)', () => start(false, true));
describeHeadReplay('Fastify (reply.raw.setHeader)', () => start(true, true));
