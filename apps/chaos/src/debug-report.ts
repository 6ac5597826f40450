import type { Attempt } from './driver.js';

/** What happened when, for the debug timeline. */
export interface FaultEvent {
  at: number;
  what: string;
}

const label = (a: Attempt) =>
  a.status === undefined ? (a.error === 'TimeoutError' ? 'timeout' : 'err') : String(a.status);

/**
 * CHAOS_DEBUG: one line per second of the row, with each instance's answers by status
 * (by the second the attempt ended) and the fault events of that second.
 */
export function debugTimeline(
  attempts: readonly Attempt[],
  started: number,
  events: readonly FaultEvent[],
): string[] {
  const seconds = new Map<number, Map<string, Map<string, number>>>();
  for (const a of attempts) {
    const second = Math.floor((a.startedAt + a.latencyMs - started) / 1000);
    const port = `:${new URL(a.instance).port}`;
    const bySecond = seconds.get(second) ?? new Map<string, Map<string, number>>();
    seconds.set(second, bySecond);
    const byPort = bySecond.get(port) ?? new Map<string, number>();
    bySecond.set(port, byPort);
    byPort.set(label(a), (byPort.get(label(a)) ?? 0) + 1);
  }
  const last = Math.max(0, ...seconds.keys(), ...events.map((e) => (e.at - started) / 1000));
  const lines: string[] = [];
  for (let s = 0; s <= last; s++) {
    const ports = [...(seconds.get(s) ?? new Map()).entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([port, counts]) => {
        const parts = [...counts.entries()].sort().map(([k, n]) => `${k}×${n}`);
        return `${port} ${parts.join(' ')}`;
      });
    const marks = events
      .filter((e) => Math.floor((e.at - started) / 1000) === s)
      .map((e) => `[${e.what}]`);
    lines.push(
      `    +${String(s).padStart(3)} s  ${ports.join(' | ')} ${marks.join(' ')}`.trimEnd(),
    );
  }
  return lines;
}
