// rev11: --principal-json (a principal that is not a string), --principal refused when JSON
// reads it as a non-string, quoted keys refused: against records @idem/http wrote in Redis.
import { withIdempotency } from '@idem/http';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { REDIS_URL, redisUnderPrefix, runInProcess } from './in-process.js';

const run = runInProcess;

describe('rev11 cli --principal-json', () => {
  const redis = redisUnderPrefix('rev11-cli');
  const { prefix } = redis;

  async function record(principal: unknown, key: string) {
    const handler = withIdempotency(async () => Response.json({ ok: true }), {
      store: createRedisStore({ client: redis.client(), keyPrefix: prefix }),
      scope: () => ({ principal: principal as never }),
    });
    const response = await handler(
      new Request('http://localhost/orders', {
        method: 'POST',
        headers: { 'Idempotency-Key': `"${key}"`, 'content-type': 'application/json' },
        body: '{}',
      }),
    );
    expect(response.status).toBe(200);
  }

  const common = ['--store', REDIS_URL, '--prefix', prefix, '--operation', 'POST /orders'];

  it('a number principal: found with --principal-json 42, refused with --principal 42, absent as the string', async () => {
    await record(42, 'rev11-num');
    expect((await run('inspect', 'rev11-num', '--principal-json', '42', ...common)).code).toBe(0);
    expect((await run('inspect', 'rev11-num', '--principal', '42', ...common)).code).toBe(2);
    expect((await run('inspect', 'rev11-num', '--principal-json', '"42"', ...common)).code).toBe(3);
  });

  it('an object principal is found whatever the key order given', async () => {
    await record({ tenant: 't1', user: 'u' }, 'rev11-obj');
    expect(
      (
        await run(
          'inspect',
          'rev11-obj',
          '--principal-json',
          '{"user":"u","tenant":"t1"}',
          ...common,
        )
      ).code,
    ).toBe(0);
  });

  it('a quoted key is refused with the key to give; --principal-json null and bad JSON are usage errors', async () => {
    await record('acct', 'rev11-q');
    const quoted = await run('inspect', '"rev11-q"', '--principal', 'acct', ...common);
    expect(quoted.code).toBe(2);
    expect(quoted.lines.join('\n')).toContain('(rev11-q)');
    expect((await run('inspect', 'rev11-q', '--principal', 'acct', ...common)).code).toBe(0);
    expect((await run('inspect', 'k', '--principal-json', 'null', ...common)).code).toBe(2);
    expect((await run('inspect', 'k', '--principal-json', '{bad', ...common)).code).toBe(2);
    expect(
      (await run('inspect', 'k', '--principal-json', '1', '--principal', '1', ...common)).code,
    ).toBe(2);
  });
});
