import type { LedgerEntry } from './ledger.js';

/** Token totals over every bill of a ledger. */
interface UsageTotals {
  messages: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** What `GET /v1/usage` answers of a ledger: the most recent bills and the totals of all. */
export interface LedgerUsage {
  /** The `limit` most recent bills, oldest first. */
  recent: LedgerEntry[];
  totals: UsageTotals;
}

/** Most recent bills `GET /v1/usage` lists by default, and at most (`?limit=`). */
export const DEFAULT_USAGE_LIMIT = 1_000;
export const MAX_USAGE_LIMIT = 10_000;

const newestFirst = (a: LedgerEntry, b: LedgerEntry) => b.billedAt - a.billedAt;

/**
 * Sums bills one at a time and keeps only the `limit` most recent, so that a summary of a
 * ledger of any size holds at most `2 * limit` entries.
 */
export class UsageAccumulator {
  private kept: LedgerEntry[] = [];
  readonly totals: UsageTotals = {
    messages: 0,
    prompt_tokens: 0,
    completion_tokens: 0,
    total_tokens: 0,
  };

  constructor(private readonly limit: number) {}

  add(entry: LedgerEntry): void {
    this.totals.messages += 1;
    this.totals.prompt_tokens += entry.promptTokens;
    this.totals.completion_tokens += entry.completionTokens;
    this.totals.total_tokens += entry.totalTokens;
    this.kept.push(entry);
    if (this.kept.length >= 2 * this.limit) this.trim();
  }

  private trim(): void {
    this.kept.sort(newestFirst);
    this.kept.length = Math.min(this.kept.length, this.limit);
  }

  result(): LedgerUsage {
    this.trim();
    return { recent: this.kept.reverse(), totals: { ...this.totals } };
  }
}

/** The summary of a ledger read whole (a ledger without its own `usage`). */
export function summarize(entries: Iterable<LedgerEntry>, limit: number): LedgerUsage {
  const summary = new UsageAccumulator(limit);
  for (const entry of entries) summary.add(entry);
  return summary.result();
}
