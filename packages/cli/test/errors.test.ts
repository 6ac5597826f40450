import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SilentServer, silentServer } from './in-process.js';
import { idem, requireBuild } from './spawn-cli.js';

describe('idem: usage errors (exit 2) and store errors (exit 1)', () => {
  beforeAll(requireBuild);

  it.each([
    [[], /Unknown command/],
    [
      ['show', 'k', '--store', 'redis://x', '--global', '--operation', 'POST /a'],
      /Unknown command: show/,
    ],
    [['inspect', 'k', '--global', '--operation', 'POST /a'], /--store is required/],
    [['inspect', 'k', '--store', 'redis://x'], /exactly one of --scope/],
    [['inspect', 'k', '--store', 'redis://x', '--scope', '{bad'], /--scope must be JSON/],
    [['inspect', 'k', '--store', 'redis://x', '--principal', 'p'], /need --operation/],
    [['inspect', 'k', '--store', 'mysql://x', '--scope', '1'], /Unknown store mysql:/],
    [['inspect', 'nothex', '--store', 'redis://x', '--storage-key'], /64 lowercase hex/],
    [['inspect', 'bad key\u0001', '--store', 'redis://x', '--scope', '1'], /key/i],
    [['inspect', 'k', '--store', 'redis://x', '--scope', '1', '--bogus'], /Unknown option/],
  ])('%j', async (args, message) => {
    const run = await idem(...(args as string[]));
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(run.stderr).toContain('Usage: idem');
    expect(run.stdout).toBe('');
  });

  it('a password never reaches the output: a --store that is not a URL, a store error, ?password=', async () => {
    const bad = await idem('inspect', 'k', '--scope', '1', '--store', 'redis://:hunter2@h:99999');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--store is not a URL: redis:\/\/:\*\*\*@h:99999/);
    for (const store of [
      'postgres://root:hunter2@127.0.0.1:1/test',
      'postgres://root@127.0.0.1:1/test?password=hunter2',
    ]) {
      const run = await idem('inspect', 'k', '--scope', '1', '--store', store);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/ECONNREFUSED/);
      expect(run.stderr).toContain('***');
      expect(run.stderr).not.toContain('hunter2');
    }
  });

  it('options a store refuses before sending anything (a table name) are a usage error', async () => {
    const run = await idem(
      ...['inspect', 'k', '--scope', '1', '--table', 'bad;drop'],
      ...['--store', 'postgres://root@127.0.0.1:1/test'],
    );
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/table must be/);
    expect(run.stderr).toContain('Usage: idem');
  });

  it('a store that refuses the connection is exit 1 with the cause', async () => {
    const run = await idem('inspect', 'k', '--scope', '1', '--store', 'redis://127.0.0.1:1');
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^idem: inspect failed on redis:\/\/127\.0\.0\.1:1.*ECONNREFUSED/);
  });

  describe('a store that never answers', () => {
    let server: SilentServer;
    let port = 0;
    beforeAll(async () => {
      server = await silentServer();
      port = server.port;
    });
    afterAll(() => server.close());

    it('gives up after --timeout-ms with exit 1', async () => {
      const started = Date.now();
      const run = await idem(
        'inspect',
        'k',
        '--scope',
        '1',
        '--timeout-ms',
        '500',
        '--store',
        `postgres://postgres@127.0.0.1:${port}/test`,
      );
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/gave up after 500 ms|timed out|timeout/i);
      expect(Date.now() - started).toBeLessThan(20_000);
    });
  });
});
