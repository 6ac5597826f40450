import { describe, expect, it } from 'vitest';
import { runInProcess } from './in-process.js';

// rev20 (review): messages that echo the operator's input (a key pasted from a log, a
// --scope, an unknown option) went to the terminal raw, so an escape sequence, a carriage
// return or a direction mark in it acted on the operator's screen; and --json left DEL, the C1
// controls (U+009B is a CSI on some terminals) and direction marks unescaped.
const ESC = '\u001b';
/** A control (other than the line feed between lines), DEL, a C1 control or a direction mark. */
const MARKS = new Set([
  0x061c, 0x200e, 0x200f, 0x2028, 0x2029, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067,
  0x2068, 0x2069,
]);
const dangerous = {
  test: (text: string) =>
    [...text].some((ch) => {
      const c = ch.charCodeAt(0);
      return (c < 0x20 && c !== 0x0a) || (c >= 0x7f && c <= 0x9f) || MARKS.has(c);
    }),
};
const payloads = [`${ESC}[2J${ESC}[31m`, '\r\u009b31m', '\u202eevil', '\u2028line'];

describe('rev20 cli: what the operator typed cannot act on the terminal', () => {
  const cases = (payload: string) => [
    // a key with the payload (refused as a key, by a message that does not echo it)
    ['inspect', `"k${payload}`, '--store', 'redis://127.0.0.1:1', '--scope', '1'],
    // a --scope that is not JSON
    ['inspect', 'k', '--store', 'redis://127.0.0.1:1', '--scope', `{${payload}`],
    // an unknown option and an unknown command
    ['inspect', 'k', '--store', 'redis://127.0.0.1:1', '--scope', '1', `--x${payload}`],
    [`show${payload}`, 'k'],
  ];

  it('text output: each control or mark shown as \\uXXXX, backslashes as typed', async () => {
    let runs = 0;
    let shownEscaped = 0;
    for (const payload of payloads)
      for (const argv of cases(payload)) {
        const run = await runInProcess(...argv);
        expect(run.code).toBe(2);
        const text = run.lines.join('\n');
        expect([argv, dangerous.test(text)]).toEqual([argv, false]);
        runs++;
        if (/\\u(001b|000d|009b|202e|2028)/.test(text)) shownEscaped++;
      }
    expect(runs).toBe(16);
    // The --scope, option and command messages echo the input (the key's is refused first by
    // a message that does not): 12 of 16, each with the payload escaped.
    expect(shownEscaped).toBe(12);
    // Backslashes the operator typed are shown as typed (not doubled).
    const typed = await runInProcess(
      'inspect',
      'k',
      '--store',
      'redis://127.0.0.1:1',
      '--scope',
      '{"a\\b',
    );
    expect(typed.lines.join('\n')).toContain('--scope must be JSON: {"a\\b');
  });

  it('--json output: one line, nothing that acts on a terminal, the same message once parsed', async () => {
    for (const payload of payloads)
      for (const argv of cases(payload)) {
        const run = await runInProcess(...argv, '--json');
        expect(run.code).toBe(2);
        expect(run.lines).toHaveLength(1);
        const line = run.lines[0] as string;
        expect([argv, dangerous.test(line)]).toEqual([argv, false]);
        const parsed = JSON.parse(line) as { error: { code: string; message: string } };
        expect(parsed.error.code).toBe('usage');
        // Escaped on the wire, the operator's characters as typed once parsed.
        if (argv.some((arg) => arg.startsWith('{') || arg.startsWith('--x')))
          expect(parsed.error.message).toContain(payload);
      }
  });
});
