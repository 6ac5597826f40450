/** What a numeric column holds, which decides how it is printed. */
export type ColumnKind = 'rate' | 'ratio' | 'share';

export interface Column {
  header: string;
  kind: ColumnKind;
}

/** One line of a suite's table: its labels, then one cell per numeric column. */
export interface Row {
  labels: string[];
  /** `null` only where the column does not apply to the row (a peer without that framework). */
  cells: (number | null)[];
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

function formatCell(value: number | null, kind: ColumnKind): string {
  if (value === null) return '—';
  if (kind === 'rate') return Math.round(value).toLocaleString('en-US');
  if (kind === 'share') return `${(value * 100).toFixed(0)} %`;
  return `${value.toFixed(2)}×`;
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
    const cells = row.cells.map((v, i) => formatCell(v, suite.columns[i]!.kind));
    lines.push(`| ${[...row.labels, ...cells].join(' | ')} |`);
  }
  return lines.join('\n');
}

/** `a ÷ b`, or null when either is missing. */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a == null || b == null || b === 0) return null;
  return a / b;
}
