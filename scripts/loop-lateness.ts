import { readFileSync } from 'node:fs';

/**
 * How late this process's event loop ran, for tests that judge a time the product promises.
 *
 * CI runs every suite side by side on two cores at a load of 25 and more: a timer of the
 * product that is due while the process waits for a core fires late by that wait, and an answer
 * the test times comes later by it. A sampler ticks every 25 ms and keeps each stretch in which
 * a tick came late (the loop could run nothing then). A test then discounts only the lateness
 * that could have delayed what it measures ({@link latenessAround}), never the whole span: a
 * timer that is pending is not delayed by the loop being late meanwhile, so lateness in those
 * stretches is not discounted, and a time limit chained onto another or a longer wait still
 * fails unless the process was kept off a core for most of the span.
 *
 * Not for judging CPU work the code under test does on this thread (it makes the loop late
 * itself, so it would be discounted): judge that with `process.cpuUsage()`.
 */
const TICK_MS = 25;
/** Stretches the loop could not run: [from, to] in performance.now() time. */
const stalls: Array<{ from: number; to: number }> = [];
let sampler: ReturnType<typeof setInterval> | undefined;
let last = 0;

/** Starts the sampler (once per process); call it before the span to be judged begins. */
export function sampleLoopLateness(): void {
  if (sampler !== undefined) return;
  last = performance.now();
  sampler = setInterval(() => {
    const now = performance.now();
    const late = now - last - TICK_MS;
    last = now;
    if (late > 0) stalls.push({ from: now - late, to: now });
    while (stalls.length > 0 && (stalls[0] as { to: number }).to < now - 300_000) stalls.shift();
  }, TICK_MS);
  sampler.unref();
}

/** How long the loop was stalled within [from, to] (performance.now() time). */
export function lateness(from: number, to: number): number {
  let sum = 0;
  for (const s of stalls) sum += Math.max(0, Math.min(s.to, to) - Math.max(s.from, from));
  return sum;
}

/**
 * The lateness that can have delayed a span from `start` to `end` (performance.now() time) in
 * which the code under test waits on timers due `due` ms after `start` (each a step of a chain),
 * then, after the last, on `except` spans the caller discounts whole (another process's time,
 * such as a server's set-up; disjoint). The span came `over` ms late (its length less the last
 * due time and the `except` spans), so each step ran at most `over` ms after it was due, and
 * only a stall between a step's due time and its run (or between `start` and the first timer
 * being set, or in the last `over` ms before the answer) delayed it. So the lateness counted is
 * the one in the windows [start + d, start + d + over] for d in 0 and `due`, and
 * [end - over, end], merged, and outside the `except` spans. With one timer and no `except`
 * that is the first and the last `over` ms of the span.
 */
export function latenessAround(
  start: number,
  end: number,
  due: readonly number[],
  except: ReadonlyArray<{ from: number; to: number }> = [],
): number {
  const excepted = except.reduce((sum, e) => sum + (e.to - e.from), 0);
  const over = Math.max(0, end - start - Math.max(0, ...due) - excepted);
  const windows = [0, ...due]
    .map((d) => ({ from: start + d, to: Math.min(end, start + d + over) }))
    .concat({ from: end - over, to: end })
    .sort((a, b) => a.from - b.from);
  const counted = (from: number, to: number) =>
    except.reduce(
      (sum, e) => sum - lateness(Math.max(from, e.from), Math.max(from, Math.min(to, e.to))),
      lateness(from, to),
    );
  let sum = 0;
  let covered = Number.NEGATIVE_INFINITY;
  for (const w of windows) {
    const from = Math.max(w.from, covered);
    if (w.to > from) sum += counted(from, w.to);
    covered = Math.max(covered, w.to);
  }
  return sum;
}

/**
 * How long this process's main thread (the event loop's) has waited for a core while it could
 * run, in ms (Linux: the run-queue wait in /proc/self/task/<pid>/schedstat), or `undefined`
 * where that is not kept. Unlike {@link lateness} this counts no time the thread ran (work the
 * code under test does on the loop is not discounted) and no time it slept (a timer pending, an
 * answer awaited), so a span's length less the wait in it is the thread's own time.
 */
export function runQueueWaitMs(): number | undefined {
  try {
    const fields = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ');
    const waited = Number(fields[1]);
    return Number.isFinite(waited) ? waited / 1e6 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs `span` and returns its wall time and the part of it the event loop's thread waited for
 * a core (the run-queue wait; where the system keeps none, the loop's lateness meanwhile, which
 * also counts the loop's own blocking work: judge CPU work with `process.cpuUsage()` then).
 */
export async function timedOnCpu<T>(
  span: () => Promise<T>,
): Promise<{ result: T; wallMs: number; waitedMs: number; cpuMs: number }> {
  const queued = runQueueWaitMs();
  // Only where there is no run-queue wait to read: the sampler's own wake-ups wait for a core
  // too, and that wait is on no answer's path.
  if (queued === undefined) sampleLoopLateness();
  const cpu = process.cpuUsage();
  const start = performance.now();
  const result = await span();
  const end = performance.now();
  const spent = process.cpuUsage(cpu);
  const after = runQueueWaitMs();
  const waitedMs =
    queued !== undefined && after !== undefined ? after - queued : lateness(start, end);
  return { result, wallMs: end - start, waitedMs, cpuMs: (spent.user + spent.system) / 1_000 };
}
