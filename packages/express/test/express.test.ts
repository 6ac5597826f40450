import express from 'express';
import { listening } from '../../http/test/support/client.js';
import { describeHttpScenarios, TENANT_HEADER } from '../../http/test/support/scenarios.js';
import { idempotency } from '../src/index.js';

describeHttpScenarios({
  name: 'express',
  async start({ options, routes }) {
    const app = express();
    app.use(
      idempotency({ ...options, scope: (req) => ({ principal: req.get(TENANT_HEADER) ?? null }) }),
    );
    app.use(express.json());
    for (const [path, behaviour] of routes) {
      app.all(path, async (req, res) => {
        const query = new URLSearchParams(req.originalUrl.split('?')[1] ?? '');
        const reply = await behaviour({ body: req.body, query, tenant: req.get(TENANT_HEADER) });
        res.status(reply.status).set(reply.headers);
        if (reply.body instanceof Uint8Array) {
          res.end(Buffer.from(reply.body));
          return;
        }
        try {
          for await (const chunk of reply.body) res.write(chunk);
          res.end();
        } catch (error) {
          res.destroy(error as Error);
        }
      });
    }
    return listening(app.listen(0, '127.0.0.1'));
  },
});
