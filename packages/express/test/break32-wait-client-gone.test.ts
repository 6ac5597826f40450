import type { AddressInfo } from 'node:net';
import { describeWaitClientGone, WAIT_CLIENT_GONE_WAIT } from '@idem/http-conformance';
import express from 'express';
import { idempotency } from '../src/index.js';

// break32 FINDING (LOW-MEDIUM, bounded time; fixed): under `wait`, a duplicate whose client
// left while it waited for the first request went on polling the store until
// `wait.timeoutMs` (the middleware gave begin() no signal), though the README says a client
// that leaves during a bounded wait ends it at once: every connection opened and dropped at
// once left a poller behind for the whole wait (observed: 5 to 6 more acquisitions in 1.5 s
// after the client left, up to 20 s). A pipelined duplicate's queued response is never closed
// by Node: its request's close on a destroyed connection counts too.

describeWaitClientGone(
  'break32 express: a client that leaves during a bounded wait',
  async (probe, store) => {
    const app = express();
    app.use(idempotency({ store, scope: 'global', wait: WAIT_CLIENT_GONE_WAIT }));
    app.post('/charges', async (_req, res) => {
      const run = await probe.work();
      res.status(201).json({ run });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () => {
        const closed = new Promise((resolve) => server.close(resolve));
        server.closeAllConnections();
        return closed;
      },
    };
  },
  { pipelined: true },
);
