import { describeReasonPhrase, listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa from 'koa';
import { idempotency } from '../src/index.js';

describeReasonPhrase('@idem/koa', async () => {
  let runs = 0;
  const app = new Koa();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global' }));
  app.use(bodyParser());
  app.use((ctx) => {
    runs++;
    ctx.status = 201;
    if (ctx.path === '/made') ctx.message = 'Made here';
    ctx.body = { id: runs };
  });
  return { ...(await listening(app.listen(0, '127.0.0.1'))), runs: () => runs };
});
