// rev35p: the review of wt/perf35b (see http-conformance's rev35p-kit) on Express.
import type { AddressInfo } from 'node:net';
import express from 'express';
import { rev35pSuite } from '../../http-conformance/test/rev35p-kit.js';
import { idempotency } from '../src/index.js';

rev35pSuite(async (store, options, answer) => {
  const app = express();
  app.post('/r', idempotency({ store, scope: 'global', ...options }), (req, res) => {
    const { status, body } = answer(String(req.headers['idempotency-key']));
    res.status(status).send(body);
  });
  app.post('/plain', (_req, res) => {
    res.status(200).send('plain');
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
});
