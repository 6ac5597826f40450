import { describe, expect, it } from 'vitest';
import { USAGE } from '../src/args.js';
import { runInProcess } from './in-process.js';

// coreerr30: a usage error echoed what the operator typed whole: an argument pasted by mistake
// (a body, a 128 KB key, a long URL) made a message, and a line on the terminal or in --json,
// of its size. Each echo now shows the first 200 characters as typed, then the length.
const BIG = 100_000;
const big = 'x'.repeat(BIG);
const STORE = 'redis://127.0.0.1:1';

const cases: [string, string[]][] = [
  ['an unknown command', [`show${big}`, 'k']],
  ['--scope that is not JSON', ['inspect', 'k', '--store', STORE, '--scope', `{${big}`]],
  [
    '--principal-json that is not JSON',
    ['inspect', 'k', '--store', STORE, '--principal-json', `{${big}`, '--operation', 'POST /a'],
  ],
  [
    'an ambiguous --principal',
    [
      'inspect',
      'k',
      '--store',
      STORE,
      '--principal',
      `[${'1,'.repeat(BIG / 2)}1]`,
      '--operation',
      'POST /a',
    ],
  ],
  [
    'a quoted key',
    ['inspect', `"${big}"`, '--store', STORE, '--principal', 'acct', '--operation', 'POST /a'],
  ],
  ['--store that is not a URL', ['inspect', 'k', '--store', `not a url ${big}`, '--scope', '1']],
  ['an unknown option', ['inspect', 'k', '--store', STORE, '--scope', '1', `--x${big}`]],
  ['--fence', ['release', 'k', '--store', STORE, '--scope', '1', `--fence=${big}`]],
  ['a redis:// query parameter', ['inspect', 'k', '--store', `${STORE}/?${big}=1`, '--scope', '1']],
  ['an unknown store', ['inspect', 'k', '--store', `a${big}://h`, '--scope', '1']],
];

describe('coreerr30 cli: a usage error echoes at most 200 characters of an argument', () => {
  it.each(cases)('%s', async (_label, argv) => {
    const run = await runInProcess(...argv);
    expect(run.code).toBe(2);
    const text = run.lines.join('\n');
    expect(text).toContain('Usage: idem');
    expect(text.length).toBeLessThan(USAGE.length + 2_000);
    expect(text).toMatch(/… \(\d{6} chars\)/);
    const json = await runInProcess(...argv, '--json');
    expect(json.code).toBe(2);
    expect(json.lines).toHaveLength(1);
    expect((json.lines[0] as string).length).toBeLessThan(2_000);
  });

  it('what fits is echoed as typed, as before', async () => {
    const run = await runInProcess(
      'inspect',
      'k',
      '--store',
      STORE,
      '--scope',
      `{${'y'.repeat(199)}`,
    );
    const text = run.lines.join('\n');
    expect(text).toContain(`--scope must be JSON: {${'y'.repeat(199)}`);
    expect(text).not.toContain('chars)');
  });
});
