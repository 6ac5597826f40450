/**
 * Review tests of `idem --json` (built executable): a Redis URL whose database is not a
 * number, a DynamoDB endpoint with credentials in it, and a Redis that falls silent
 * (SIGSTOP): each path prints exactly one JSON object, the right exit, no stack trace, no
 * secret, and ends within its time limit.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliRun, idem, requireBuild } from './spawn-cli.js';

const SECRET = 's3cr3tpw';

/** The one promise of `--json`: one line on stdout, a JSON object; nothing on stderr. */
function oneJson(run: CliRun): { error?: { code: string; message: string } } {
  expect(run.stderr).toBe('');
  const lines = run.stdout.split('\n');
  expect(lines).toHaveLength(2);
  expect(run.stdout).not.toContain(SECRET);
  return JSON.parse(lines[0] as string);
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

beforeAll(() => requireBuild());

describe('idem --json, review: bad store URLs', () => {
  it('a Redis database that is not a number: bad_store_url, exit 2, no stack trace', async () => {
    const run = await idem(
      ...['inspect', 'k', '--scope', '1', '--json', '--timeout-ms', '5000'],
      ...['--store', `redis://127.0.0.1:6379/abc`],
    );
    const json = oneJson(run);
    expect(json.error?.code).toBe('bad_store_url');
    expect(run.code).toBe(2);
  });

  it('a DynamoDB endpoint with a password in it is never echoed', async () => {
    const port = await freePort();
    const run = await idem(
      ...['inspect', 'k', '--scope', '1', '--json', '--timeout-ms', '3000'],
      ...[
        '--store',
        `dynamodb://idem?region=eu-west-1&endpoint=http://u:${SECRET}@127.0.0.1:${port}`,
      ],
    );
    // The AWS SDK may warn on stderr about the Node version: only stdout is checked here.
    expect(run.stdout).not.toContain(SECRET);
    expect(run.stderr).not.toContain(SECRET);
    const json = JSON.parse(run.stdout) as { error: { code: string; message: string } };
    expect(json.error.message).toContain(`u:***@127.0.0.1:${port}`);
    expect(run.code).toBe(1);
  });
});

describe('idem --json, review: a Redis that falls silent (SIGSTOP)', () => {
  let server: ChildProcess | undefined;
  let port = 0;
  beforeAll(async () => {
    port = await freePort();
    server = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    const until = Date.now() + 10_000;
    for (;;) {
      const up = await idem(
        ...['inspect', 'k', '--scope', '1', '--json', '--timeout-ms', '1000'],
        ...['--store', `redis://127.0.0.1:${port}`],
      );
      if (up.code === 3) break;
      if (Date.now() > until) throw new Error(`redis-server on ${port} did not start`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    server.kill('SIGSTOP');
  });
  afterAll(() => {
    if (!server?.pid) return;
    server.kill('SIGCONT');
    server.kill('SIGTERM');
  });

  it.each(['inspect', 'release', 'delete'])(
    '%s: one JSON object, exit 1, within the time limit',
    async (action) => {
      const started = performance.now();
      const run = await idem(
        ...[action, 'k', '--scope', '1', '--json', '--timeout-ms', '1500'],
        ...(action === 'release' ? ['--force'] : []),
        ...['--store', `redis://:${SECRET}@127.0.0.1:${port}`],
      );
      const took = performance.now() - started;
      // The process start and its exit grace (1 s) come on top of the command's 1.5 s.
      expect(took).toBeLessThan(8_000);
      const json = oneJson(run);
      expect(['timeout', 'store_unavailable']).toContain(json.error?.code);
      expect(run.code).toBe(1);
    },
  );
});

describe('shown: store URLs in messages', () => {
  it('masks a password inside a URL-valued parameter (DynamoDB endpoint)', async () => {
    const { shown } = await import('../src/args.js');
    const text = shown(new URL(`dynamodb://t?endpoint=http://u:${SECRET}@h:1&region=x`));
    expect(text).not.toContain(SECRET);
    expect(decodeURIComponent(text)).toContain('http://u:***@h:1');
  });
});
