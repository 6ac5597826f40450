import { StoreUnavailableError } from '@idem/core';
import { type AppOptions, createApp } from '../src/app.js';
import { openBackend } from '../src/backend.js';
import { createLocalModel } from '../src/model/local-model.js';

/**
 * The app on the memory store whose ledger refuses every bill while `state.failing` (the
 * idempotency store and the counters still answer, so heartbeats keep the lease); `ledger`
 * is the real one underneath, for the test to read.
 */
export async function appWithFailingBills(
  options: Pick<AppOptions, 'leaseMs' | 'billRetryMs' | 'maxPendingBills'>,
) {
  const backend = await openBackend({ kind: 'memory' }, 'test:');
  const ledger = backend.ledger;
  const state = { failing: true };
  backend.ledger = {
    ...ledger,
    bill: async (entry, recordKey) => {
      if (state.failing) throw new StoreUnavailableError('the ledger is unreachable (injected)');
      return ledger.bill(entry, recordKey);
    },
  };
  const { app } = createApp({ backend, model: createLocalModel({ chunkDelayMs: 0 }), ...options });
  return { app, ledger, state, close: () => backend.close() };
}
