import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchReport, SuiteResult } from '../src/result.js';

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));

/** Runs the benchmark as `pnpm bench` does (same entry point), smoke profile. */
function runBench(
  jsonPath: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: PACKAGE_DIR,
      env: { ...process.env, BENCH_PROFILE: 'smoke', BENCH_JSON: jsonPath, BENCH_SUITES: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    // Bounded: the smoke profile takes about a minute on a quiet machine; a hang fails the test.
    const timer = setTimeout(() => child.kill('SIGKILL'), 270_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const engineRows = (concurrency: number[]) =>
  concurrency.flatMap((c) => [
    [String(c), 'cycle'],
    [String(c), 'replay'],
  ]);

const expected: Record<string, { columns: string[]; rows: string[][] }> = {
  redis: {
    columns: [
      'raw ioredis',
      'idem',
      'Powertools',
      'node-idempotency',
      'idem ÷ best peer',
      'idem ÷ raw',
    ],
    rows: engineRows([1, 64]),
  },
  dynamodb: {
    columns: ['raw SDK', 'idem', 'Powertools', 'idem ÷ best peer', 'idem ÷ raw'],
    rows: engineRows([1, 16]),
  },
  memory: {
    columns: ['raw Map', 'idem', 'node-idempotency', 'idem ÷ best peer', 'idem ÷ raw'],
    rows: engineRows([1, 64]),
  },
  http: {
    columns: [
      'without',
      'idem',
      'express-idempotency',
      'idem ÷ without',
      'express-idempotency ÷ without',
      'idem ÷ best peer',
    ],
    rows: ['hono', 'express', 'fastify'].flatMap((f) => [
      [f, 'first execution'],
      [f, 'replay'],
    ]),
  },
};

/** The only cells without a figure: the Express-only peer on the other frameworks. */
function mayBeEmpty(suite: SuiteResult, labels: string[], column: string): boolean {
  return (
    suite.id === 'http' &&
    labels[0] !== 'express' &&
    (column.startsWith('express-idempotency') || column === 'idem ÷ best peer')
  );
}

describe('pnpm bench, smoke profile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'idem-bench-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let run: Promise<{ report: BenchReport; stdout: string }> | undefined;
  const once = () => {
    run ??= runBench(join(dir, 'report.json')).then(({ code, stdout, stderr }) => {
      if (code !== 0) throw new Error(`bench exited with ${code}:\n${stderr.slice(-4_000)}`);
      const report = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as BenchReport;
      return { report, stdout };
    });
    return run;
  };

  it('runs every suite, in order, and names the machine', async () => {
    const { report, stdout } = await once();
    expect(report.profile).toBe('smoke');
    expect(report.suites.map((s) => s.id)).toEqual(['redis', 'dynamodb', 'memory', 'http']);
    expect(report.machine.join('\n')).toMatch(/\d+ cores .*Node v\d+/);
    expect(report.machine.join('\n')).toMatch(/Redis \d+\.\d+/);
    expect(stdout).toContain('# idem benchmark');
  });

  for (const [id, want] of Object.entries(expected)) {
    it(`${id}: every row, every cell a positive number, and the printed table`, async () => {
      const { report, stdout } = await once();
      const suite = report.suites.find((s) => s.id === id)!;
      expect(suite.columns.map((c) => c.header)).toEqual(want.columns);
      expect(suite.rows.map((r) => r.labels)).toEqual(want.rows);
      let figures = 0;
      for (const row of suite.rows) {
        expect(row.cells).toHaveLength(want.columns.length);
        expect(row.ranges).toHaveLength(want.columns.length);
        row.cells.forEach((cell, i) => {
          const column = want.columns[i]!;
          if (cell === null) {
            expect(mayBeEmpty(suite, row.labels, column), `${row.labels} ${column}`).toBe(true);
            expect(row.ranges[i]).toBeNull();
            return;
          }
          figures++;
          expect(Number.isFinite(cell) && cell > 0, `${row.labels} ${column}: ${cell}`).toBe(true);
          // The median lies within the range of its rounds.
          const [low, high] = row.ranges[i]!;
          expect(low <= cell && cell <= high, `${row.labels} ${column}: ${low}..${high}`).toBe(
            true,
          );
        });
        expect(stdout).toContain(`| ${row.labels.join(' | ')} | `);
      }
      expect(figures).toBeGreaterThan(0);
      expect(stdout).toContain(`## ${suite.title}`);
    });
  }
});
