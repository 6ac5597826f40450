import { StoreUnavailableError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { openBackend } from '../src/backend.js';
import { createMemoryLedger, type Ledger, type LedgerEntry } from '../src/ledger/ledger.js';
import { billPersistently, isTransientStoreFailure } from '../src/ledger/persistent-bill.js';
import { createLocalModel } from '../src/model/local-model.js';

const failure = (cause: unknown) => new StoreUnavailableError('bill failed', { cause });
const replyError = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });
const entry: LedgerEntry = {
  messageId: 'msg_1',
  model: 'm',
  promptTokens: 1,
  completionTokens: 2,
  totalTokens: 3,
  fence: 1,
  billedAt: 0,
};

/** A ledger whose bill fails `failures` times with `error`, then works; counts the calls. */
function flakyLedger(failures: number, error: unknown) {
  const ledger = createMemoryLedger();
  let calls = 0;
  const flaky: Ledger = {
    ...ledger,
    bill: async (e) => {
      calls += 1;
      if (calls <= failures) throw error;
      return ledger.bill(e);
    },
  };
  return { ledger: flaky, calls: () => calls };
}

describe('which store failures a bill retries', () => {
  it('retries what can pass (lost connections, timeouts, a Redis loading or failing over), not refusals', () => {
    expect(isTransientStoreFailure(failure(new Error('Connection is closed.')))).toBe(true);
    expect(isTransientStoreFailure(new StoreUnavailableError('timed out'))).toBe(true);
    expect(isTransientStoreFailure(failure(replyError('LOADING Redis is loading')))).toBe(true);
    expect(isTransientStoreFailure(failure(replyError('READONLY replica')))).toBe(true);
    expect(isTransientStoreFailure(failure(replyError('WRONGTYPE Operation')))).toBe(false);
    const validation = Object.assign(new Error('bad key'), { $fault: 'client' });
    expect(isTransientStoreFailure(failure(validation))).toBe(false);
    const throttled = Object.assign(new Error('slow down'), {
      $fault: 'client',
      $retryable: { throttling: true },
    });
    expect(isTransientStoreFailure(failure(throttled))).toBe(true);
    expect(isTransientStoreFailure(new Error('not a store failure'))).toBe(false);
  });

  it('lands the bill after transient failures; gives up at once on a refusal', async () => {
    const outage = flakyLedger(3, failure(new Error('Connection is closed.')));
    await expect(billPersistently(outage.ledger, entry, { retryForMs: 5_000 })).resolves.toBe(
      'billed',
    );
    expect(outage.calls()).toBe(4);

    const refused = flakyLedger(1, failure(replyError('WRONGTYPE Operation')));
    await expect(billPersistently(refused.ledger, entry, { retryForMs: 5_000 })).rejects.toThrow(
      'bill failed',
    );
    expect(refused.calls()).toBe(1);
  });

  it('gives up with the store failure once `stop` aborts (the end of a graceful shutdown)', async () => {
    const down = flakyLedger(Number.POSITIVE_INFINITY, failure(new Error('Connection is closed.')));
    const stop = new AbortController();
    const billing = billPersistently(down.ledger, entry, { retryForMs: 60_000, stop: stop.signal });
    await new Promise((resolve) => setTimeout(resolve, 120));
    stop.abort();
    await expect(billing).rejects.toThrow('bill failed');
    expect(down.calls()).toBeGreaterThan(1);
  });
});

describe('many requests retrying their bills at once', () => {
  it('share the shutdown signal without a MaxListenersExceededWarning', async () => {
    const backend = await openBackend({ kind: 'memory' }, 'test:');
    // The store is down for the first 40 bills, then back.
    backend.ledger = flakyLedger(40, failure(new Error('Connection is closed.'))).ledger;
    const { app } = createApp({ backend, model: createLocalModel({ chunkDelayMs: 0 }) });
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const answers = await Promise.all(
        Array.from({ length: 15 }, (_, i) =>
          app.request('/api/messages', {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'idempotency-key': `k${i}` },
            body: JSON.stringify({ prompt: `concurrent ${i}`, model: 'm' }),
          }),
        ),
      );
      expect(answers.map((a) => a.status)).toEqual(answers.map(() => 201));
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
      await backend.close();
    }
  });
});
