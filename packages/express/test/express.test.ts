import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ScopeHint } from '@idem/http';
import {
  describeHttpConformance,
  listening,
  memoryStores,
  redisStores,
  TENANT_HEADER,
} from '@idem/http-conformance';
import express from 'express';
import { idempotency } from '../src/index.js';

describeHttpConformance('express', {
  stores: [memoryStores(), redisStores()],
  async start({ options, routes }) {
    const app = express();
    app.use(
      idempotency({
        ...options,
        // Undefined without the header: the suite checks the 500 no-principal answer.
        scope: (req) => ({ principal: req.get(TENANT_HEADER) }) as ScopeHint,
      }),
    );
    app.use(express.json());
    app.use(express.raw({ type: 'application/octet-stream' }));
    for (const [path, behaviour] of routes) {
      app.all(path, async (req, res) => {
        const query = new URLSearchParams(req.originalUrl.split('?')[1] ?? '');
        const reply = await behaviour({ body: req.body, query, tenant: req.get(TENANT_HEADER) });
        res.status(reply.status).set(reply.headers);
        if (reply.body instanceof Uint8Array) {
          res.end(Buffer.from(reply.body));
          return;
        }
        // A stream that throws destroys the response (pipeline does).
        await pipeline(Readable.from(reply.body), res).catch(() => {});
      });
    }
    return listening(app.listen(0, '127.0.0.1'));
  },
});
