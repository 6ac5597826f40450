/** One line of the demo's table. */
export interface Row {
  scenario: string;
  /** Logical requests the clients made (each got one answer). */
  logical: number;
  /** HTTP attempts the clients sent. */
  attempts: number;
  /** Attempts answered with a replay of a recorded outcome. */
  replays: number;
  /** Model executions that completed (server counter). */
  executions: number;
  /** Model executions that failed on purpose (scripted 500s). */
  failed: number;
  /** Tokens added to the ledger. */
  billed: number;
}

const COLUMNS: [keyof Row, string][] = [
  ['scenario', 'scenario'],
  ['logical', 'logical requests'],
  ['attempts', 'attempts'],
  ['replays', 'replays'],
  ['executions', 'model executions'],
  ['failed', 'injected 500s'],
  ['billed', 'tokens billed'],
];

/** A plain-text table: the scenario left-aligned, numbers right-aligned, a rule before the total. */
export function renderTable(rows: readonly Row[]): string {
  const cells = rows.map((row) => COLUMNS.map(([key]) => String(row[key])));
  const widths = COLUMNS.map(([, title], i) =>
    Math.max(title.length, ...cells.map((line) => (line[i] as string).length)),
  );
  const format = (line: readonly string[]) =>
    line
      .map((cell, i) =>
        i === 0 ? cell.padEnd(widths[i] as number) : cell.padStart(widths[i] as number),
      )
      .join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  const body = cells.map(format);
  if (body.length > 1) body.splice(body.length - 1, 0, rule);
  return [format(COLUMNS.map(([, title]) => title)), rule, ...body].join('\n');
}
