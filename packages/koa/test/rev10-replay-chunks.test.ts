import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { replayChunksSuite } from '../../http-conformance/test/replay-chunks-kit.js';
import { idempotency } from '../src/index.js';

// rev10: a replay of many small chunks to a client that does not read holds what the first
// execution held (Koa's `answer` goes through `sendPrepared`; the suite is
// http-conformance/test/replay-chunks-kit.ts: counted, not weighed).
replayChunksSuite('koa', async (chunks) => {
  let runs = 0;
  const app = new Koa();
  app.silent = true;
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.use((ctx) => {
    runs++;
    ctx.status = 200;
    ctx.type = 'text/plain';
    const body = new PassThrough();
    ctx.body = body;
    // The producer honours backpressure and yields now and then, as a streaming route does.
    void (async () => {
      for (let i = 0; i < chunks; i++) {
        if (!body.write('x')) await new Promise((resolve) => body.once('drain', resolve));
        if (i % 1_000 === 999) await new Promise((resolve) => setImmediate(resolve));
      }
      body.end();
    })();
  });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, runs: () => runs };
});
