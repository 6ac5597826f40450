import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { runCli } from '../src/index.js';
import { idem, requireBuild } from './spawn-cli.js';

// rev13 adversarial review of @idem/cli's `dynamodb://` URLs, which no test exercised.

/** A port nothing listens on (a server bound it and closed). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function inProcess(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli([...args, '--json'], {
    out: (line) => out.push(line),
    err: (line) => err.push(line),
  });
  expect(err).toEqual([]);
  expect(out).toHaveLength(1);
  return { code, json: JSON.parse(out[0] as string) as { error?: { code: string } } };
}

const scope = ['--global', '--operation', 'POST /orders'];

describe('rev13 cli: dynamodb:// URLs the CLI cannot use are usage errors', () => {
  // FIXED (was FINDING LOW): a `dynamodb://` URL whose parts the CLI itself cannot use failed
  // as if the store had failed: exit 1 (`store_unavailable` or `store_error`) instead of exit
  // 2 `bad_store_url`, though nothing was sent. The README: "2 usage error, including options
  // a store refuses before sending anything" and `bad_store_url` "when --store ... names no
  // table". Cases: `endpoint=` not a URL or with a port out of range (the SDK's "Invalid
  // URL", reported as DynamoDB unavailable), a table name with a bad %-escape (`URIError: URI
  // malformed`, `store_error`), no region in the URL nor where the SDK looks ("Region is
  // missing", `store_unavailable`). A script that retries exit 1 (the store is down) retried a
  // command line that can never work. Fix: openDynamoDb checks the table escape, the endpoint
  // (an http(s) URL), the region (a name; one must resolve) and throws UsageError
  // ('bad_store_url') before any request.
  it.each([
    ['endpoint not a URL', 'dynamodb://orders?region=us-east-1&endpoint=notaurl'],
    [
      'endpoint port out of range',
      'dynamodb://orders?region=us-east-1&endpoint=http://127.0.0.1:99999',
    ],
    [
      'table with a bad %-escape',
      'dynamodb://%E0orders?region=us-east-1&endpoint=http://127.0.0.1:1',
    ],
    ['no region anywhere', 'dynamodb://orders?endpoint=http://127.0.0.1:1'],
    ['endpoint not http(s)', 'dynamodb://orders?region=us-east-1&endpoint=ftp://127.0.0.1:1'],
    ['region not a name', 'dynamodb://orders?region=us%20east&endpoint=http://127.0.0.1:1'],
  ])('%s: exit 2, bad_store_url', async (_name, store) => {
    const saved = process.env.AWS_REGION;
    const savedDefault = process.env.AWS_DEFAULT_REGION;
    delete process.env.AWS_REGION;
    delete process.env.AWS_DEFAULT_REGION;
    try {
      const { code, json } = await inProcess('inspect', 'k', ...scope, '--store', store);
      expect(json.error?.code).toBe('bad_store_url');
      expect(code).toBe(2);
    } finally {
      if (saved !== undefined) process.env.AWS_REGION = saved;
      if (savedDefault !== undefined) process.env.AWS_DEFAULT_REGION = savedDefault;
    }
  });

  it('a table given with --table and a URL that names the endpoint and region: the refused connection is store_unavailable, exit 1', async () => {
    const port = await deadPort();
    const { code, json } = await inProcess(
      ...['inspect', 'k', ...scope, '--table', 'orders'],
      ...['--store', `dynamodb://ignored?region=us-east-1&endpoint=http://127.0.0.1:${port}`],
    );
    expect(json.error?.code).toBe('store_unavailable');
    expect(code).toBe(1);
  });
});

describe('rev13 cli: --json keeps stderr empty with a dynamodb:// store', () => {
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  // FIXED (was FINDING LOW): `--json` promises one JSON object on stdout "and nothing on
  // stderr", but on Node 20 (which the CLI supports: engines >= 20) every `dynamodb://` run
  // also printed the AWS SDK's multi-line `NodeVersionSupportWarning` on stderr (the SDK emits
  // it when a client is made on Node < 22). A script that reads `2>&1`, or treats any stderr
  // as an error, broke. Fix: the `idem` executable sets
  // AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED (unless the user set it) before it runs
  // a command, as this repository's own test configs do.
  it.runIf(nodeMajor < 22)(
    'the spawned CLI prints nothing on stderr',
    async () => {
      requireBuild();
      const port = await deadPort();
      // The child inherits this process's environment: no opt-out, dummy credentials. Put
      // back name by name: \`process.env = copy\` would leave the files that run after this one
      // in the same worker process a plain object, not the environment.
      const names = [
        'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED',
        'AWS_ACCESS_KEY_ID',
        'AWS_SECRET_ACCESS_KEY',
      ] as const;
      const saved = names.map((name) => process.env[name]);
      delete process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
      process.env.AWS_ACCESS_KEY_ID = 'rev13';
      process.env.AWS_SECRET_ACCESS_KEY = 'rev13';
      let run: Awaited<ReturnType<typeof idem>>;
      try {
        run = await idem(
          ...['inspect', 'k', ...scope, '--json'],
          ...['--store', `dynamodb://orders?region=us-east-1&endpoint=http://127.0.0.1:${port}`],
        );
      } finally {
        names.forEach((name, i) => {
          const value = saved[i];
          if (value === undefined) delete process.env[name];
          else process.env[name] = value;
        });
      }
      expect(run.code).toBe(1);
      expect(JSON.parse(run.stdout).error.code).toBe('store_unavailable');
      expect(run.stderr).toBe('');
    },
    30_000,
  );
});
