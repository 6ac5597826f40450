// clirev: an operator's review of the CLI against records an app really wrote (or a corrupt
// one): keys with a quote or a backslash that @idem/http keeps, a record retained "for ever",
// store strings that would act on the terminal, and what a timed-out release says.
import { randomBytes } from 'node:crypto';
import { createIdempotency, deriveStorageKey } from '@idem/core';
import { withIdempotency } from '@idem/http';
import { createRedisStore } from '@idem/store-redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  REDIS_URL,
  redisUnderPrefix,
  runInProcess,
  type SilentServer,
  silentServer,
} from './in-process.js';

const run = runInProcess;

describe('clirev: the CLI on records an app wrote in Redis', () => {
  const redis = redisUnderPrefix('clirev-cli');
  const { prefix } = redis;
  const store = () => createRedisStore({ client: redis.client(), keyPrefix: prefix });
  const common = ['--store', REDIS_URL, '--prefix', prefix];

  it.each([
    ['a quote', 'ord"7', '"ord\\"7"'],
    ['a backslash', 'ord\\7', '"ord\\\\7"'],
  ])(
    'a key with %s that @idem/http keeps is found and released, not refused',
    async (_what, key, header) => {
      let gate: () => void = () => {};
      const stuck = new Promise<void>((resolve) => {
        gate = resolve;
      });
      let started = false;
      const handler = withIdempotency(
        async () => {
          started = true;
          await stuck;
          return Response.json({ ok: true });
        },
        { store: store(), scope: () => ({ principal: 'acct-q' }), leaseMs: 60_000 },
      );
      const pending = handler(
        new Request('http://localhost/orders', {
          method: 'POST',
          headers: { 'Idempotency-Key': header, 'content-type': 'application/json' },
          body: '{}',
        }),
      );
      for (let i = 0; i < 250 && !started; i++) await new Promise((r) => setTimeout(r, 20));
      expect(started).toBe(true);
      const scope = ['--principal', 'acct-q', '--operation', 'POST /orders', ...common];
      const seen = await run('inspect', key, ...scope, '--json');
      expect(seen.code).toBe(0);
      expect(JSON.parse(seen.lines[0] as string)).toMatchObject({
        storageKey: deriveStorageKey(['idem/http/v1', 'acct-q', 'POST /orders'], key),
        status: 'in_progress',
      });
      expect((await run('release', key, ...scope, '--force')).code).toBe(0);
      gate();
      await pending;
      // The header's quoted form itself is still refused, naming the key it stands for.
      const quoted = await run('inspect', header, ...scope);
      expect(quoted.code).toBe(2);
      expect(quoted.lines.join('\n')).toContain(`(${key})`);
    },
  );

  it('inspect shows a record kept for ever (retentionMs: Number.MAX_SAFE_INTEGER)', async () => {
    const idem = createIdempotency({ store: store(), retentionMs: Number.MAX_SAFE_INTEGER });
    await idem.execute({ key: 'forever-1', scope: ['s'] }, async () => ({ ok: true }));
    const shown = await run('inspect', 'forever-1', '--scope', '["s"]', ...common);
    expect(shown.code).toBe(0);
    expect(shown.lines.join('\n')).toMatch(/retained {5}until epoch ms 9007199254740991/);
    expect(shown.lines.join('\n')).toMatch(/status {7}completed/);
  });

  it('inspect and release never send a store string’s control characters to the terminal', async () => {
    const key = randomBytes(32).toString('hex');
    const owner = 'own\u001b[2J\u001b]0;pwned\u0007\u202e';
    const fingerprint = 'fp\r\nstatus       completed';
    const now = Date.now();
    const header = Buffer.alloc(42);
    header[0] = 1; // format
    header[1] = 1; // in progress
    header.writeDoubleBE(1, 2);
    header.writeDoubleBE(now + 60_000, 10);
    header.writeDoubleBE(now + 120_000, 18);
    header.writeDoubleBE(0, 26);
    header.writeUInt32BE(Buffer.byteLength(owner), 34);
    header.writeUInt32BE(Buffer.byteLength(fingerprint), 38);
    await redis
      .client()
      .set(
        `${prefix}{${key}}`,
        Buffer.concat([header, Buffer.from(owner), Buffer.from(fingerprint)]),
        'PX',
        120_000,
      );
    const args = [key, '--storage-key', ...common];
    const inspected = await run('inspect', ...args);
    expect(inspected.code).toBe(0);
    const released = await run('release', ...args, '--force');
    expect(released.code).toBe(0);
    for (const text of [inspected.lines.join('\n'), released.lines.join('\n')]) {
      // No control character but the line breaks between lines, no direction mark.
      for (const ch of text) expect(ch === '\n' || (ch >= ' ' && ch < '\u007f')).toBe(true);
      expect(text).toContain('own\\u001b[2J\\u001b]0;pwned\\u0007\\u202e');
    }
    // One line per field: the fingerprint's CR LF cannot draw a second "status" line.
    expect(inspected.lines.filter((line) => line.startsWith('status'))).toHaveLength(1);
    expect(inspected.lines.join('\n')).toContain('fp\\u000d\\u000astatus       completed');
    // --json keeps the exact strings (JSON escapes them).
    const json = await run('inspect', ...args, '--json');
    expect(JSON.parse(json.lines[0] as string)).toMatchObject({ fingerprint, status: 'released' });
  });
});

describe('clirev: a release that times out says it may still be applied', () => {
  let server: SilentServer;
  beforeAll(async () => {
    server = await silentServer();
  });
  afterAll(() => server.close());

  it.each([
    ['release', true],
    ['delete', true],
    ['inspect', false],
  ] as const)('%s', async (action, warns) => {
    const store = [
      '--store',
      `postgres://postgres@127.0.0.1:${server.port}/test`,
      '--timeout-ms',
      '300',
    ];
    for (const json of [[], ['--json']]) {
      const force = action === 'release' ? ['--force'] : [];
      const { code, lines } = await run(action, 'k', '--scope', '1', ...store, ...force, ...json);
      expect(code).toBe(1);
      const text = lines.join('\n');
      expect(text).toMatch(/gave up after 300 ms/);
      if (warns) expect(text).toMatch(new RegExp(`the ${action} may still be applied`));
      else expect(text).not.toMatch(/may still be applied/);
    }
  });
});
