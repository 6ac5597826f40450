import { describe, expect, it } from 'vitest';
import { BackgroundTasks } from '../src/background.js';

// The engine's background work (final writes retried past the caller's answer) as a count:
// what `size` says and what `drain` waits for.

function deferred() {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

describe('BackgroundTasks', () => {
  it('counts tasks until they settle, fulfilled or rejected', async () => {
    const tasks = new BackgroundTasks();
    const a = deferred();
    const b = deferred();
    tasks.track(a.promise);
    tasks.track(b.promise);
    expect(tasks.size).toBe(2);
    a.resolve();
    await a.promise;
    expect(tasks.size).toBe(1);
    b.reject(new Error('the task failed'));
    await b.promise.catch(() => {});
    expect(tasks.size).toBe(0);
  });

  it('drain resolves once the last task settles, with 0, not at its timeout', async () => {
    const tasks = new BackgroundTasks();
    const a = deferred();
    tasks.track(a.promise);
    const started = performance.now();
    const draining = tasks.drain(10_000);
    setTimeout(() => a.resolve(), 30);
    expect(await draining).toBe(0);
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it('a task tracked during a drain is waited for too; concurrent drains all end', async () => {
    const tasks = new BackgroundTasks();
    const a = deferred();
    const b = deferred();
    tasks.track(a.promise);
    const first = tasks.drain(10_000);
    const second = tasks.drain(10_000);
    tasks.track(b.promise);
    a.resolve();
    await a.promise;
    let ended = false;
    void first.then(() => {
      ended = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(ended).toBe(false);
    b.resolve();
    expect(await first).toBe(0);
    expect(await second).toBe(0);
  });

  it('a drain that times out answers how many are left; a later one still waits for them', async () => {
    const tasks = new BackgroundTasks();
    const a = deferred();
    tasks.track(a.promise);
    expect(await tasks.drain(20)).toBe(1);
    // Timed-out drains leave nothing behind to resolve later.
    for (let i = 0; i < 50; i++) expect(await tasks.drain(1)).toBe(1);
    const later = tasks.drain(10_000);
    a.resolve();
    expect(await later).toBe(0);
    expect(tasks.size).toBe(0);
    // Nothing pending: at once.
    expect(await tasks.drain(0)).toBe(0);
  });

  it('100,000 tasks tracked and settled one by one leave the count at 0', async () => {
    const tasks = new BackgroundTasks();
    for (let i = 0; i < 100_000; i++) tasks.track(Promise.resolve(i));
    expect(tasks.size).toBe(100_000);
    expect(await tasks.drain(10_000)).toBe(0);
  });
});
