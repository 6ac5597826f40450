import { callWithin } from '../stores/bounded-call.js';
import type { Ledger } from './ledger.js';

/**
 * The ledger with every call bounded by `timeoutMs` and every store failure typed as
 * `StoreUnavailableError` (503 + Retry-After), see {@link callWithin}. A refused bill still
 * throws `StaleFenceError`.
 */
export function boundLedger(ledger: Ledger, timeoutMs: number): Ledger {
  return {
    bill: (entry) => callWithin('ledger.bill', timeoutMs, () => ledger.bill(entry)),
    entries: () => callWithin('ledger.entries', timeoutMs, () => ledger.entries()),
    count: (name) => callWithin('ledger.count', timeoutMs, () => ledger.count(name)),
    stats: () => callWithin('ledger.stats', timeoutMs, () => ledger.stats()),
  };
}
