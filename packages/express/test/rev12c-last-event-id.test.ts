/**
 * rev12c (adversarial review of 94a3db0/9ce9ee9): Express reads `Last-Event-ID` from Node's
 * IncomingMessage (a byte string); @idem/http decodes it by UTF-8. The tests are the
 * conformance kit's (`describeLastEventIdBytes`).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describeLastEventIdBytes, LAST_EVENT_ID_EVENTS } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { idempotency } from '../src/index.js';

describeLastEventIdBytes('rev12c Express', async () => {
  let runs = 0;
  const app = express();
  app.use(express.json());
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/stream', (_req, res) => {
    runs++;
    res.status(200).type('text/event-stream');
    for (const event of LAST_EVENT_ID_EVENTS) res.write(event);
    res.end();
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
