import type { RowResult } from './verdict.js';

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function recovery(row: RowResult): string {
  if (row.recoveryMs === null) return 'n/a';
  if (row.recoveryMs === undefined) return 'never';
  return seconds(row.recoveryMs);
}

/** A figure that is reported in this row but is not a promise gets a `*`. */
const judged = (value: number, promised: boolean) => (promised ? String(value) : `${value}*`);

/** The one table of a run: a Markdown table, so it can be pasted into the README as is. */
export function formatTable(rows: readonly RowResult[]): string {
  const header = [
    'fault',
    'requests',
    'attempts',
    'twice',
    'different answers',
    'never completed',
    '500s',
    '503s',
    'conn errors',
    'max latency',
    'recovery',
    'max RSS',
    'verdict',
  ];
  const lines = rows.map((row) => [
    row.fault,
    String(row.requests),
    String(row.attempts),
    judged(row.twice, row.promises.zeroTwice),
    judged(row.differentAnswers, row.promises.zeroDifferentAnswers),
    `${row.neverCompleted}${row.promises.storeFullIsAnAnswer && row.storeFull > 0 ? ` (${row.storeFull} full)` : ''}`,
    String(row.serverErrors),
    String(row.unavailable),
    String(row.connectionErrors),
    `${seconds(row.maxLatencyMs)}${row.outlived > 0 ? ` (${row.outlived} over)` : ''}`,
    recovery(row),
    `${Math.round(row.maxRssMiB)} MiB`,
    row.broken.length === 0 ? 'PASS' : 'FAIL',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const numeric = (i: number) => i > 0 && i < header.length - 1;
  const cell = (text: string, i: number) =>
    numeric(i) ? text.padStart(widths[i] ?? 0) : text.padEnd(widths[i] ?? 0);
  const render = (cells: readonly string[]) => `| ${cells.map(cell).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (numeric(i) ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [render(header), rule, ...lines.map(render)].join('\n');
}

/** The broken promises, one line each, naming the row. */
export function formatBroken(rows: readonly RowResult[]): string[] {
  return rows.flatMap((row) => row.broken.map((b) => `BROKEN  ${row.fault}: ${b}`));
}
