// break32b: an option given twice is a usage error (exit 2, nothing sent). Before the fix
// Node's parseArgs kept the last one silently: `--store <prod> ... --store <staging>` acted
// on staging, `--operation` twice on a key the operator did not read first, `--fence` twice
// released under the second fence.
import { describe, expect, it } from 'vitest';
import { runInProcess } from './in-process.js';

const base = ['inspect', 'k', '--global', '--operation', 'POST /x', '--json'];

describe('break32b: repeated options', () => {
  for (const [name, extra] of [
    ['--store', ['--store', 'redis://127.0.0.1:1', '--store', 'redis://127.0.0.1:2']],
    ['--operation', ['--store', 'redis://127.0.0.1:1', '--operation', 'POST /y']],
    ['--global', ['--store', 'redis://127.0.0.1:1', '--global']],
    ['--timeout-ms', ['--store', 'redis://127.0.0.1:1', '--timeout-ms', '5', '--timeout-ms', '9']],
  ] as [string, string[]][]) {
    it(`${name} twice: usage error naming it`, async () => {
      const run = await runInProcess(...base, ...extra);
      expect(run.code).toBe(2);
      const { error } = JSON.parse(run.lines[0] as string);
      expect(error).toMatchObject({ code: 'usage', message: expect.stringContaining(name) });
    });
  }
  it('--json twice stays one JSON answer (a flag repeated is refused too)', async () => {
    const run = await runInProcess(...base, '--json', '--store', 'redis://127.0.0.1:1');
    expect(run.code).toBe(2);
    expect(run.lines).toHaveLength(1);
  });
});
