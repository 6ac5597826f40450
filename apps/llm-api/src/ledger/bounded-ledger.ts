import type { Admission } from '@idem/core';
import { callWithin } from '../stores/bounded-call.js';
import type { Ledger } from './ledger.js';
import type { LedgerUsage } from './usage-summary.js';

/**
 * The ledger with every call bounded by `timeoutMs` and every store failure typed as
 * `StoreUnavailableError` (503 + Retry-After), see {@link callWithin}. A refused bill still
 * throws `StaleFenceError`.
 */
export function boundLedger(ledger: Ledger, timeoutMs: number): Ledger {
  return {
    bill: (entry, recordKey) =>
      callWithin('ledger.bill', timeoutMs, () => ledger.bill(entry, recordKey)),
    entries: () => callWithin('ledger.entries', timeoutMs, () => ledger.entries()),
    ...(ledger.usage
      ? {
          usage: (limit: number): Promise<LedgerUsage> =>
            callWithin('ledger.usage', timeoutMs, (signal) =>
              (ledger.usage as NonNullable<Ledger['usage']>)(limit, signal),
            ),
        }
      : {}),
    count: (name) => callWithin('ledger.count', timeoutMs, () => ledger.count(name)),
    stats: () => callWithin('ledger.stats', timeoutMs, () => ledger.stats()),
  };
}

/**
 * The ledger behind the store client's admission limit (see `createAdmission` in
 * `@idem/core`): bills and counters are written while a request holds its key, so they are
 * essential, never refused; the listings are sheddable, refused under overload.
 */
export function admitLedger(ledger: Ledger, admission: Admission): Ledger {
  return {
    bill: (entry, recordKey) => admission.run('essential', () => ledger.bill(entry, recordKey)),
    entries: () => admission.run('sheddable', () => ledger.entries()),
    ...(ledger.usage
      ? {
          usage: (limit: number, signal?: AbortSignal): Promise<LedgerUsage> =>
            admission.run('sheddable', () =>
              (ledger.usage as NonNullable<Ledger['usage']>)(limit, signal),
            ),
        }
      : {}),
    count: (name) => admission.run('essential', () => ledger.count(name)),
    stats: () => admission.run('sheddable', () => ledger.stats()),
  };
}
