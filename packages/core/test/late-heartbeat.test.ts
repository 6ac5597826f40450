/**
 * An event loop held up longer than the lease (a long poll phase under load, a synchronous
 * stretch) runs the first heartbeat late, past the lease estimate. Declaring the lease lost
 * then, without asking the store, aborted operations whose key nobody had taken, and a caller
 * that released the key on that abort let a retry run the operation a second time (the chaos
 * suite's memory-1mib row under load). The late renewal now asks first: the lease is lost only
 * when another owner holds the key, or the renewal fails or outlives `storeTimeoutMs`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createIdempotency, LeaseLostError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { holdLoop, only, takeOver } from './support/held-loop.js';

const LEASE_MS = 100;

/**
 * Runs an operation that holds the loop past the lease, then waits for its signal: ms from the
 * end of the hold to the abort, undefined when it was not aborted within ten leases.
 */
async function abortAfterHeldLoop(
  idem: ReturnType<typeof createIdempotency>,
  key: string,
): Promise<number | undefined> {
  let abortedAfter: number | undefined;
  await idem
    .execute({ key }, async ({ signal }) => {
      holdLoop(LEASE_MS * 2.5);
      const from = performance.now();
      await new Promise<void>((resolve) => {
        signal.addEventListener('abort', () => resolve(), { once: true });
        setTimeout(resolve, LEASE_MS * 10);
      });
      abortedAfter = signal.aborted ? performance.now() - from : undefined;
      throw signal.reason;
    })
    .catch(() => undefined);
  return abortedAfter;
}

describe('a first heartbeat that runs past the lease estimate', () => {
  it('renews the lease when nobody took the key: the operation is not aborted and runs once', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: LEASE_MS, heartbeatMs: 30 });
    let runs = 0;
    const result = await idem.execute({ key: 'held-up' }, async ({ signal }) => {
      runs++;
      holdLoop(LEASE_MS * 2.5);
      // The late heartbeat runs now, then the operation goes on past another lease.
      await sleep(LEASE_MS * 1.5);
      return signal.aborted;
    });
    expect(result.value).toBe(false);
    expect(store.calls.extend).toBeGreaterThanOrEqual(1);
    expect(only(store.records.values()).status).toBe('completed');
    const again = await idem.execute({ key: 'held-up' }, async () => {
      runs++;
      return true;
    });
    expect(again.replayed).toBe(true);
    expect(runs).toBe(1);
  });

  it('loses the lease when another owner took the key meanwhile', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: LEASE_MS, heartbeatMs: 30 });
    const outcome = idem.execute({ key: 'taken' }, async ({ signal }) => {
      holdLoop(LEASE_MS * 2.5);
      // Another process's retry takes the passed lease over before this one renews.
      await takeOver(store);
      await sleep(LEASE_MS);
      if (signal.aborted) throw signal.reason;
      return 'should not be recorded';
    });
    await expect(outcome).rejects.toBeInstanceOf(LeaseLostError);
    expect(only(store.records.values()).owner).toBe('another-owner');
  });

  it('loses the lease when that renewal fails', async () => {
    const store = new FakeStore();
    store.always.extend = 'throw';
    const idem = createIdempotency({ store, leaseMs: LEASE_MS, heartbeatMs: 30 });
    const abortedAfter = await abortAfterHeldLoop(idem, 'failing');
    expect(abortedAfter).toBeDefined();
    expect(abortedAfter).toBeLessThan(LEASE_MS * 5);
  });

  it('loses the lease when that renewal does not answer within storeTimeoutMs', async () => {
    const store = new FakeStore();
    store.next.extend.push('hang');
    const idem = createIdempotency({
      store,
      leaseMs: LEASE_MS,
      heartbeatMs: 30,
      storeTimeoutMs: 50,
    });
    const abortedAfter = await abortAfterHeldLoop(idem, 'hanging');
    expect(abortedAfter).toBeDefined();
    expect(abortedAfter).toBeLessThan(LEASE_MS * 5);
  });
});
