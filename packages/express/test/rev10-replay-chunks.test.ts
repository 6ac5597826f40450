import { once } from 'node:events';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { replayChunksSuite } from '../../http-conformance/test/replay-chunks-kit.js';
import { idempotency } from '../src/index.js';

// rev10: a replay of many small chunks to a client that does not read holds what the first
// execution held (http-conformance/test/replay-chunks-kit.ts: counted, not weighed).
replayChunksSuite('express', async (chunks) => {
  let runs = 0;
  const app = express();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/stream', async (_req, res) => {
    runs++;
    res.status(200).type('text/plain');
    // The route honours backpressure and yields now and then, as a streaming route does.
    for (let i = 0; i < chunks; i++) {
      if (!res.write('x')) await new Promise((resolve) => res.once('drain', resolve));
      if (i % 1_000 === 999) await new Promise((resolve) => setImmediate(resolve));
    }
    res.end();
  });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, runs: () => runs };
});
