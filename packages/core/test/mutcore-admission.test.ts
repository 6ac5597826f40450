// Mutation audit (mutcore): admission. `maxWaitMs`: "Longest a sheddable call waits for a slot
// before it is refused" (0: refused at once); `admitStore`: "`acquire`, `get` and `release`
// are sheddable (a refused release leaves the key to its lease)".
import { describe, expect, it } from 'vitest';
import { admitStore, createAdmission, StoreUnavailableError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

/** A call that settles when told to. */
function gate() {
  let open!: (value: string) => void;
  const promise = new Promise<string>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

describe('mutcore: admission', () => {
  // Mutant: with maxWaitMs 0 a call still waits in the queue (for a timer of 0 ms).
  it('maxWaitMs 0 refuses at once: nothing waits, and a slot freed right after does not serve it', async () => {
    const admission = createAdmission({
      targetLatencyMs: 100,
      initialLimit: 1,
      minLimit: 1,
      maxWaitMs: 0,
      now: () => 0,
    });
    const busy = gate();
    const running = admission.run('sheddable', () => busy.promise);
    let called = false;
    const refused = admission.run('sheddable', async () => {
      called = true;
      return 'x';
    });
    expect(admission.waiting).toBe(0);
    expect(admission.refused).toBe(1);
    busy.open('ok');
    expect(await running).toBe('ok');
    await expect(refused).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', unsent: true });
    expect(called).toBe(false);
  });

  // Mutant: `release` admitted as essential work (never refused).
  it('admitStore sheds a release past the limit (the key is left to its lease)', async () => {
    const store = new FakeStore();
    const admission = createAdmission({
      targetLatencyMs: 100,
      initialLimit: 1,
      minLimit: 1,
      maxQueue: 0,
      now: () => 0,
    });
    const admitted = admitStore(store, admission);
    const busy = gate();
    const running = admission.run('sheddable', () => busy.promise);
    const error = await admitted
      .release({ key: 'k'.repeat(64), owner: 'o', retentionMs: 1_000 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect(store.calls.release).toBe(0);
    // Essential work still passes.
    expect(
      await admitted.extend({
        key: 'k'.repeat(64),
        owner: 'o',
        leaseMs: 1_000,
        retentionMs: 1_000,
      }),
    ).toMatchObject({ ok: false });
    busy.open('ok');
    await running;
  });
});
