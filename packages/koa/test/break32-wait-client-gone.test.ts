import type { AddressInfo } from 'node:net';
import { describeWaitClientGone, WAIT_CLIENT_GONE_WAIT } from '@idem/http-conformance';
import Koa from 'koa';
import { idempotency } from '../src/index.js';

// break32 FINDING (LOW-MEDIUM, bounded time; fixed): under `wait`, a duplicate whose client
// left while it waited went on polling the store until `wait.timeoutMs` (the middleware gave
// begin() no signal): see express's test of the same name.

describeWaitClientGone(
  'break32 koa: a client that leaves during a bounded wait',
  async (probe, store) => {
    const app = new Koa();
    app.use(idempotency({ store, scope: 'global', wait: WAIT_CLIENT_GONE_WAIT }));
    app.use(async (ctx) => {
      const run = await probe.work();
      ctx.status = 201;
      ctx.body = { run };
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
