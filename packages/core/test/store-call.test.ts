import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { callStore, StoreUnavailableError } from '../src/index.js';

const never = () => new Promise<never>(() => {});
const resolveAfter = <T>(ms: number, value: T) =>
  new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));

describe('callStore time limits (one shared timer per limit length)', () => {
  it('times out every call that does not answer, each after its own limit, and only those', async () => {
    const started = performance.now();
    const first = callStore('acquire', 150, never);
    await resolveAfter(60, null);
    const answered = callStore('acquire', 150, () => resolveAfter(20, 'answered'));
    const second = callStore('acquire', 150, never);
    const late = callStore('complete', 150, () => resolveAfter(400, 'too late'));
    const firstAt = first.then(
      () => Number.NaN,
      (error: unknown) => {
        expect(error).toBeInstanceOf(StoreUnavailableError);
        expect((error as Error).message).toBe('Store acquire timed out after 150 ms');
        return performance.now() - started;
      },
    );
    const secondAt = second.then(
      () => Number.NaN,
      () => performance.now() - started,
    );
    await expect(answered).resolves.toBe('answered');
    await expect(late).rejects.toThrow('Store complete timed out after 150 ms');
    // Each limit counts from its own call (timers may fire a little late, never early).
    expect(await firstAt).toBeGreaterThanOrEqual(148);
    expect(await firstAt).toBeLessThan(140 + 60);
    expect(await secondAt).toBeGreaterThanOrEqual(60 + 148);
  });

  it('a call is never timed out by the timer of an earlier call that answered', async () => {
    // The shared timer is armed for the first call; it answers, and a later call becomes the
    // oldest pending one: when the timer fires at the first call's deadline, the later call
    // is not due yet.
    await callStore('acquire', 300, () => resolveAfter(5, 'first'));
    await resolveAfter(150, null);
    const started = performance.now();
    const rejectedAfter = await callStore('acquire', 300, never).then(
      () => Number.NaN,
      () => performance.now() - started,
    );
    expect(rejectedAfter).toBeGreaterThanOrEqual(298);
  });

  it('limits of different lengths do not wait for each other', async () => {
    const long = callStore('acquire', 5_000, never).catch((error: unknown) => error);
    const started = performance.now();
    await expect(callStore('extend', 50, never)).rejects.toThrow('timed out after 50 ms');
    expect(performance.now() - started).toBeLessThan(1_000);
    void long;
  });

  it('a failing call rejects as STORE_UNAVAILABLE with its cause, before its limit', async () => {
    const cause = new Error('connection reset');
    const error = await callStore('release', 10_000, () => Promise.reject(cause)).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as StoreUnavailableError).cause).toBe(cause);
  });

  // The process-level behaviour of the shared timer, as a timer per call had it: a pending
  // call keeps the process alive until its limit unless it is background work (unref), and
  // an answered call leaves nothing that keeps it alive.
  // The child runs the built package (the tests run after `pnpm build`).
  const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
  const run = (body: string) => {
    if (!existsSync(dist)) throw new Error(`${dist} is missing: run pnpm build first`);
    const started = performance.now();
    const child = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `import { callStore } from ${JSON.stringify(dist)};\n${body}`],
      { encoding: 'utf8', timeout: 20_000 },
    );
    return { ms: performance.now() - started, out: child.stdout + child.stderr };
  };

  it('keeps the process alive for a pending call until its limit; not for background work or answered calls', () => {
    const pending = run(
      "callStore('acquire', 1500, () => new Promise(() => {})).catch((e) => console.log('rejected', e.message));",
    );
    expect(pending.out).toContain('rejected Store acquire timed out after 1500 ms');
    expect(pending.ms).toBeGreaterThanOrEqual(1_500);
    const background = run(
      "callStore('complete', 30000, () => new Promise(() => {}), { unref: true }); console.log('left');",
    );
    expect(background.out).toContain('left');
    const answered = run(
      "await callStore('acquire', 30000, async () => 1); console.log('answered');",
    );
    expect(answered.out).toContain('answered');
    // Neither waited for its 30 s limit (the child's start-up is most of this).
    expect(background.ms).toBeLessThan(15_000);
    expect(answered.ms).toBeLessThan(15_000);
  });
});
