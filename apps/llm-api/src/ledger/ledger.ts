import { type LedgerUsage, summarize } from './usage-summary.js';

/** One billed message. */
export interface LedgerEntry {
  /** The message (or chat completion) id; one entry per id, ever. */
  messageId: string;
  model: string;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /**
   * Fencing token of the execution that billed it. A write with a lower fence than the
   * stored one is refused, so an executor that lost its lease can never bill.
   */
  fence: number;
  /** Epoch ms of the bill. */
  billedAt: number;
}

/**
 * What a bill did:
 * - `billed`: first bill of this message id;
 * - `replaced`: a newer execution (higher fence) replaced the bill of an older one, which
 *   lost its lease: the message is still billed once;
 * - `duplicate`: the same execution billed again (nothing changed).
 */
export type BillResult = 'billed' | 'replaced' | 'duplicate';

/** The execution's fence is lower than the one already billed: it lost its lease. */
export class StaleFenceError extends Error {
  constructor(messageId: string, fence: number, current: number) {
    super(`Refused to bill ${messageId} with fence ${fence}: fence ${current} already billed it`);
    this.name = 'StaleFenceError';
  }
}

/** Counters the server keeps beside the ledger (model executions, failures). */
export type StatName = 'model_started' | 'model_completed' | 'model_failed';

/**
 * The token ledger: tokens billed per message id, and the server's counters. Each backend
 * (memory, Redis, DynamoDB) MUST make `bill` one atomic conditional write: at most one entry
 * per message id, replaced only by a higher fence.
 */
export interface Ledger {
  /**
   * Bills a message; throws {@link StaleFenceError} when a higher fence already billed it.
   * `recordKey`: the storage key of the request's idempotency record, for a ledger that
   * bills in the completion's transaction (the others ignore it).
   */
  bill(entry: LedgerEntry, recordKey?: string): Promise<BillResult>;
  /** Every entry, oldest bill first. Reads the whole ledger: not for a request path. */
  entries(): Promise<LedgerEntry[]>;
  /**
   * The `limit` most recent bills (oldest first) and the totals of every bill, without
   * holding more than a few `limit`s of entries or the event loop for long, however large the
   * ledger (`GET /v1/usage`). Optional: a ledger without it is summarised from `entries()`.
   * A ledger that reads in steps stops at the next step once `signal` aborts.
   */
  usage?(limit: number, signal?: AbortSignal): Promise<LedgerUsage>;
  /** Adds one to a counter. */
  count(name: StatName): Promise<void>;
  /** The counters (absent ones are 0). */
  stats(): Promise<Record<StatName, number>>;
}

/** The counters, all zero. */
export function zeroStats(): Record<StatName, number> {
  return { model_started: 0, model_completed: 0, model_failed: 0 };
}

/** Options of {@link createMemoryLedger}. */
export interface MemoryLedgerOptions {
  /**
   * Most bills kept. Past it the least recently billed entry is dropped, so the ledger's
   * memory stays bounded however many requests come (each bill is about 1 KB). A dropped
   * entry no longer fences its message: a stale executor that bills it after as many newer
   * bills would be counted, once. @default 100_000 (the memory store's record count)
   */
  maxEntries?: number;
}

/**
 * The in-process ledger (memory store configuration). It keeps the most recent
 * `maxEntries` bills; like the memory store, it is lost on restart.
 */
export function createMemoryLedger(options: MemoryLedgerOptions = {}): Ledger {
  const maxEntries = options.maxEntries ?? 100_000;
  const rows = new Map<string, LedgerEntry>();
  const counters = zeroStats();
  return {
    async bill(entry) {
      const current = rows.get(entry.messageId);
      if (current && current.fence > entry.fence) {
        throw new StaleFenceError(entry.messageId, entry.fence, current.fence);
      }
      if (current && current.fence === entry.fence) return 'duplicate';
      // Re-inserted at the end: the Map's order is the order of the last bill.
      rows.delete(entry.messageId);
      rows.set(entry.messageId, { ...entry });
      for (const oldest of rows.keys()) {
        if (rows.size <= maxEntries) break;
        rows.delete(oldest);
      }
      return current ? 'replaced' : 'billed';
    },
    async entries() {
      return [...rows.values()].sort((a, b) => a.billedAt - b.billedAt).map((e) => ({ ...e }));
    },
    // At most `maxEntries` rows, summed in one pass; only `limit` of them copied.
    async usage(limit) {
      const { recent, totals } = summarize(rows.values(), limit);
      return { recent: recent.map((e) => ({ ...e })), totals };
    },
    async count(name) {
      counters[name] += 1;
    },
    async stats() {
      return { ...counters };
    },
  };
}
