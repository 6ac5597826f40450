/**
 * rev12c (adversarial review of 94a3db0/9ce9ee9): Koa reads `Last-Event-ID` from Node's
 * IncomingMessage (a byte string); @idem/http decodes it by UTF-8. The tests are the
 * conformance kit's (`describeLastEventIdBytes`).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { describeLastEventIdBytes, LAST_EVENT_ID_EVENTS } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { idempotency } from '../src/index.js';

describeLastEventIdBytes('rev12c Koa', async () => {
  let runs = 0;
  const app = new Koa();
  app.silent = true;
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.use(async (ctx) => {
    runs++;
    ctx.status = 200;
    ctx.type = 'text/event-stream';
    ctx.body = Readable.from(LAST_EVENT_ID_EVENTS.map((e) => Buffer.from(e)));
  });
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    runs: () => runs,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
});
