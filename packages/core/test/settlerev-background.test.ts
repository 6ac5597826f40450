/**
 * settlerev review: `BackgroundTasks` counts its pending tasks (and keeps the drains waiting
 * for 0) instead of keeping a `Set` of them. What a drain answers, and when, must be as it
 * was (07aad06): tasks added during a drain, several drains at once, one that timed out and a
 * later one, tasks that reject, `size`. Real timers.
 */
import { describe, expect, it } from 'vitest';
import { BackgroundTasks } from '../src/background.js';

function later(ms: number, fail = false): Promise<void> {
  return new Promise((resolve, reject) =>
    setTimeout(() => (fail ? reject(new Error('task failed')) : resolve()), ms),
  );
}

function gate() {
  let open!: () => void;
  let shut!: (error: Error) => void;
  const promise = new Promise<void>((resolve, reject) => {
    open = resolve;
    shut = reject;
  });
  return { promise, open, shut };
}

/** The drains a timed-out wait left behind (none kept at 07aad06, where there is no list). */
function waiters(tasks: BackgroundTasks): number {
  return (tasks as unknown as { idle?: unknown[] }).idle?.length ?? 0;
}

describe('settlerev: BackgroundTasks.drain', () => {
  it('nothing pending: answers 0 at once', async () => {
    const tasks = new BackgroundTasks();
    const started = performance.now();
    expect(await tasks.drain(5_000)).toBe(0);
    expect(performance.now() - started).toBeLessThan(50);
    expect(tasks.drains).toBe(1);
  });

  it('a task added during a drain is waited for too', async () => {
    const tasks = new BackgroundTasks();
    tasks.track(later(20));
    setTimeout(() => tasks.track(later(80)), 10);
    const started = performance.now();
    expect(await tasks.drain(2_000)).toBe(0);
    expect(performance.now() - started).toBeGreaterThanOrEqual(75);
    expect(tasks.size).toBe(0);
  });

  it('a task tracked as the last one settles (same turn) keeps the drain waiting', async () => {
    const tasks = new BackgroundTasks();
    const first = gate();
    const second = gate();
    tasks.track(first.promise);
    first.promise.then(() => tasks.track(second.promise));
    let left: number | undefined;
    const draining = tasks.drain(2_000).then((n) => {
      left = n;
    });
    first.open();
    await later(30);
    expect(left).toBeUndefined();
    expect(tasks.size).toBe(1);
    second.open();
    await draining;
    expect(left).toBe(0);
  });

  it('rejecting tasks settle it as well, with no unhandled rejection', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const tasks = new BackgroundTasks();
      const failing = later(20, true);
      failing.catch(() => {});
      tasks.track(failing);
      tasks.track(later(10, true).catch(() => {}));
      const shut = gate();
      tasks.track(shut.promise);
      shut.shut(new Error('rejected at once'));
      expect(tasks.size).toBe(3);
      expect(await tasks.drain(1_000)).toBe(0);
      await later(20);
      expect(unhandled.filter((r) => (r as Error)?.message === 'rejected at once')).toHaveLength(0);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('size: one a tracking, the same promise twice counts twice', async () => {
    const tasks = new BackgroundTasks();
    const task = gate();
    tasks.track(task.promise);
    tasks.track(task.promise);
    expect(tasks.size).toBe(2);
    task.open();
    await task.promise;
    await Promise.resolve();
    expect(tasks.size).toBe(0);
  });

  it('several drains at once: a short one times out, the others end when the tasks do', async () => {
    const tasks = new BackgroundTasks();
    const task = gate();
    tasks.track(task.promise);
    tasks.track(later(5));
    const short = tasks.drain(30);
    const long1 = tasks.drain(5_000);
    const long2 = tasks.drain(5_000);
    expect(await short).toBe(1);
    // A later drain after the one that timed out.
    const again = tasks.drain(5_000);
    await later(20);
    task.open();
    expect(await Promise.all([long1, long2, again])).toEqual([0, 0, 0]);
    expect(tasks.drains).toBe(4);
    expect(waiters(tasks)).toBe(0);
  });

  it('repeated drains that time out leave nothing waiting behind', async () => {
    const tasks = new BackgroundTasks();
    const never = new Promise<void>(() => {});
    tasks.track(never);
    for (let i = 0; i < 100; i++) expect(await tasks.drain(1)).toBe(1);
    // Several at once, all timing out.
    expect(await Promise.all(Array.from({ length: 50 }, () => tasks.drain(5)))).toEqual(
      Array(50).fill(1),
    );
    expect(waiters(tasks)).toBe(0);
    expect(tasks.size).toBe(1);
  });

  it('a drain started from a settling task (re-entrant) ends', async () => {
    const tasks = new BackgroundTasks();
    const task = gate();
    tasks.track(task.promise);
    const outer = tasks.drain(2_000);
    let inner: Promise<number> | undefined;
    task.promise.then(() => {
      inner = tasks.drain(2_000);
    });
    task.open();
    expect(await outer).toBe(0);
    await later(5);
    expect(await inner).toBe(0);
  });

  it('drain wakes the pauses of optional work', async () => {
    const tasks = new BackgroundTasks();
    const paused = tasks.pause(10_000);
    tasks.track(later(10));
    expect(await tasks.drain(1_000)).toBe(0);
    expect(await paused).toBe(false);
  });

  it('a drain ends when the last task settles, long before its timeout', async () => {
    const tasks = new BackgroundTasks();
    const task = gate();
    tasks.track(task.promise);
    const started = performance.now();
    const draining = tasks.drain(10_000);
    setTimeout(() => task.open(), 30);
    expect(await draining).toBe(0);
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it('100,000 tasks tracked and settled leave the count at 0', async () => {
    const tasks = new BackgroundTasks();
    for (let i = 0; i < 100_000; i++) tasks.track(Promise.resolve(i));
    expect(tasks.size).toBe(100_000);
    expect(await tasks.drain(10_000)).toBe(0);
    expect(waiters(tasks)).toBe(0);
  });
});
