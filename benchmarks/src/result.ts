import { median } from './measure.js';

/** What a numeric column holds, which decides how it is printed. */
export type ColumnKind = 'rate' | 'ratio' | 'share';

export interface Column {
  header: string;
  kind: ColumnKind;
}

/** One line of a suite's table: its labels, then one cell per numeric column. */
export interface Row {
  labels: string[];
  /**
   * The median over the rounds; `null` only where the column does not apply to the row (a
   * peer without that framework).
   */
  cells: (number | null)[];
  /** The lowest and highest round of each cell (`null` where the cell is). */
  ranges: ([number, number] | null)[];
}

/** A cell from one value per round: the median, and the range of the rounds. */
export interface Figure {
  value: number | null;
  range: [number, number] | null;
}

/** The figure of per-round values (`undefined` or empty: the column does not apply). */
export function figure(rounds: readonly number[] | undefined): Figure {
  if (!rounds || rounds.length === 0) return { value: null, range: null };
  return { value: median(rounds), range: [Math.min(...rounds), Math.max(...rounds)] };
}

/**
 * `a ÷ b` round by round: each ratio pairs two measurements taken moments apart in the same
 * round, so a load that changes between rounds cancels out of it.
 */
export function pairedRatios(
  a: readonly number[] | undefined,
  b: readonly number[] | undefined,
): number[] | undefined {
  if (!a || !b || a.length !== b.length) return undefined;
  return a.map((x, i) => x / b[i]!);
}

/** The row of `figures`, in column order. */
export function row(labels: string[], figures: readonly Figure[]): Row {
  return { labels, cells: figures.map((f) => f.value), ranges: figures.map((f) => f.range) };
}

/** The table of one suite, as printed and as written by BENCH_JSON. */
export interface SuiteResult {
  id: string;
  title: string;
  /** Lines printed under the title: what was measured, sizes, versions. */
  notes: string[];
  labelHeaders: string[];
  columns: Column[];
  rows: Row[];
}

/** Everything one `pnpm bench` printed. */
export interface BenchReport {
  machine: string[];
  profile: string;
  rounds: number;
  suites: SuiteResult[];
}

function format(value: number, kind: ColumnKind): string {
  if (kind === 'rate') return Math.round(value).toLocaleString('en-US');
  if (kind === 'share') return `${(value * 100).toFixed(0)} %`;
  return `${value.toFixed(2)}×`;
}

/** A rate prints its median; a ratio or share also the range of its rounds, when they differ. */
function formatCell(
  value: number | null,
  range: [number, number] | null,
  kind: ColumnKind,
): string {
  if (value === null) return '—';
  const text = format(value, kind);
  if (kind === 'rate' || !range) return text;
  const [low, high] = range.map((v) => format(v, kind));
  return low === high ? text : `${text} (${low}–${high})`;
}

/** The suite as a Markdown table (it reads as well in a terminal as in a README). */
export function renderSuite(suite: SuiteResult): string {
  const header = [...suite.labelHeaders, ...suite.columns.map((c) => c.header)];
  const align = [...suite.labelHeaders.map(() => '---'), ...suite.columns.map(() => '---:')];
  const lines = [
    `## ${suite.title}`,
    '',
    ...suite.notes.map((n) => `- ${n}`),
    '',
    `| ${header.join(' | ')} |`,
    `| ${align.join(' | ')} |`,
  ];
  for (const row of suite.rows) {
    const cells = row.cells.map((v, i) =>
      formatCell(v, row.ranges[i] ?? null, suite.columns[i]!.kind),
    );
    lines.push(`| ${[...row.labels, ...cells].join(' | ')} |`);
  }
  return lines.join('\n');
}
