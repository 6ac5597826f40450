import { describeReasonPhrase, listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { idempotency } from '../src/index.js';

describeReasonPhrase('@idem/express', async () => {
  let runs = 0;
  const app = express();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global' }));
  app.use(express.json());
  app.post('/made', (_req, res) => {
    runs++;
    res.statusMessage = 'Made here';
    res.status(201).json({ id: runs });
  });
  app.post('/usual', (_req, res) => {
    runs++;
    res.status(201).json({ id: runs });
  });
  return { ...(await listening(app.listen(0, '127.0.0.1'))), runs: () => runs };
});
