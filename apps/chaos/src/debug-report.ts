import type { Attempt, LogicalRequest } from './driver.js';
import type { UpstreamCount } from './upstream.js';

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

/**
 * CHAOS_DEBUG: for the first `limit` keys whose model ran to completion more than once, the
 * executions and every attempt in time order (seconds since the row started), with the
 * fault events in between: enough to tell a lapsed lease from a released key.
 */
export function debugTwice(
  requests: readonly LogicalRequest[],
  counts: ReadonlyMap<string, UpstreamCount>,
  started: number,
  events: readonly FaultEvent[],
  limit = 5,
): string[] {
  const at = (ms: number) => `+${((ms - started) / 1000).toFixed(2)} s`;
  const lines: string[] = [];
  const twice = requests.filter((r) => (counts.get(r.id)?.completed ?? 0) > 1).slice(0, limit);
  for (const request of twice) {
    const count = counts.get(request.id) as UpstreamCount;
    const rows: [number, string][] = [
      ...count.startedAt.map((t, i): [number, string] => [t, `model call ${i + 1} starts`]),
      ...count.completedAt.map((t, i): [number, string] => [t, `execution ${i + 1} completed`]),
      ...request.attempts.map((a): [number, string] => [
        a.startedAt,
        `client ${a.client} -> :${new URL(a.instance).port} ${label(a)} in ${a.latencyMs} ms`,
      ]),
    ];
    const first = Math.min(...rows.map(([t]) => t));
    const last = Math.max(...rows.map(([t]) => t));
    for (const e of events)
      if (e.at >= first - 3_000 && e.at <= last) rows.push([e.at, `[${e.what}]`]);
    rows.sort((a, b) => a[0] - b[0]);
    lines.push(`  key ${request.key} ran ${count.completed} times:`);
    for (const [t, what] of rows) lines.push(`    ${at(t).padStart(9)}  ${what}`);
  }
  return lines;
}
