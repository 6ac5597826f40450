import { createRequire } from 'node:module';
import { Redis } from 'ioredis';
import { expect, test } from 'vitest';

// The run's ioredis major (IDEM_IOREDIS, see vitest.config.ts) is the one the tests load.
test('the suite runs on the ioredis major it was asked for', async () => {
  const wanted = process.env.IDEM_IOREDIS ?? '5';
  const require = createRequire(import.meta.url);
  const name = wanted === '6' ? 'ioredis6' : 'ioredis';
  const { version } = require(`${name}/package.json`) as { version: string };
  expect(version.split('.')[0]).toBe(wanted);
  // The class the tests import is the one from that package.
  const loaded = await import(name);
  expect(Redis).toBe(loaded.Redis);
});
