// Express: a middleware before idempotency() puts a Transfer-Encoding that is not Node's own
// chunked (`gzip`, `gzip, chunked`) on the response. The replay dropped it, and Node then
// framed a streamed replay by nothing: ended by the connection's close under a
// `Connection: keep-alive` head, the request pipelined behind it lost (framing2). A keyed
// HEAD (methods with GET and HEAD): no body bytes, the pipelined request read after its head.
import {
  describeHeadReplay,
  describeUpstreamFraming,
  type FramingApp,
  framingAppOptions,
  listening,
} from '@idem/http-conformance';
import express from 'express';
import { idempotency } from '../src/index.js';

async function start(head = false): Promise<FramingApp> {
  let runs = 0;
  const app = express();
  app.use((req, res, next) => {
    const coding = req.headers['x-framing'];
    if (typeof coding === 'string') res.setHeader('Transfer-Encoding', coding);
    next();
  });
  app.use(idempotency(framingAppOptions(head)));
  app.post('/stream', (_req, res) => {
    runs++;
    res.type('text/plain');
    res.write('alpha-');
    setTimeout(() => {
      res.write('beta-');
      setTimeout(() => res.end('gamma'), 5);
    }, 5);
  });
  app.post('/whole', (_req, res) => {
    runs++;
    res.type('text/plain').send('whole-body');
  });
  app.get('/doc', (_req, res) => {
    runs++;
    res.type('text/plain').send('document-body');
  });
  app.get('/ping', (_req, res) => {
    res.type('text/plain').send('pong');
  });
  return { ...(await listening(app.listen(0, '127.0.0.1'))), runs: () => runs };
}

describeUpstreamFraming('Express', () => start());
describeHeadReplay('Express', () => start(true));
