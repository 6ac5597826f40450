// break32b: `--timeout-ms` takes digits only, as `--fence` does. Before the fix `Number` read
// `0x10` as 16 ms, `1e3` as 1000 and ` 50` as 50: a typo'd or pasted value ran the command with
// a time limit nobody typed (`0x10`: 16 ms, a command that gave up at once).
import { describe, expect, it } from 'vitest';
import { runInProcess } from './in-process.js';

describe('break32b: --timeout-ms spellings', () => {
  for (const spelled of ['0x10', '1e3', '0b101', ' 50', '50 ', '+50', '50.0']) {
    it(`${JSON.stringify(spelled)} is a usage error, nothing sent`, async () => {
      const run = await runInProcess(
        'inspect',
        'k',
        '--global',
        '--operation',
        'POST /x',
        '--store',
        'redis://127.0.0.1:1',
        '--timeout-ms',
        spelled,
        '--json',
      );
      expect(run.code).toBe(2);
      expect(JSON.parse(run.lines[0] as string).error.code).toBe('usage');
    });
  }
});
