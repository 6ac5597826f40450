/**
 * The charset tests' Express app (rev12a-charset, edgerev22-review): idem, told the text
 * parser's default charset through `fingerprint`, mounted before `express.text()`; and a
 * route that answers 201 with the text the parser gave.
 */
import type { IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { type ExpressIdempotencyOptions, idempotency } from '../../src/index.js';

/** An app with idem (global scope, `store` or a memory one) before `express.text(text)`. */
export function idemBeforeText(options: {
  store?: IdempotencyStore;
  fingerprint?: ExpressIdempotencyOptions['fingerprint'];
  text?: Parameters<typeof express.text>[0];
}): express.Express {
  const app = express();
  app.use(
    idempotency({
      store: options.store ?? createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
      ...(options.fingerprint === undefined ? {} : { fingerprint: options.fingerprint }),
    }),
  );
  app.use(express.text(options.text));
  return app;
}

/** A route answering 201 `{ got: req.body }`, each body pushed to `seen` when given. */
export function answerGot(seen?: unknown[]): express.RequestHandler {
  return (req, res) => {
    seen?.push(req.body);
    res.status(201).json({ got: req.body });
  };
}
