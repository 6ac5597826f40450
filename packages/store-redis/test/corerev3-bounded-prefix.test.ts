// corerev3: two ioredis keyPrefixes that differ were quoted whole in the message: each is now
// quoted up to 64 characters, then its length.
import { InvalidInputError } from '@idem/core';
import { expect, it } from 'vitest';
import { createRedisLiveStreams } from '../src/index.js';

it('a huge keyPrefix on one of the two clients: the message quotes its start and its length', () => {
  const client = { options: { keyPrefix: 'p'.repeat(1_000_000) } };
  const blockingClient = { options: { keyPrefix: 'q:' } };
  let error: Error | undefined;
  try {
    createRedisLiveStreams({
      client,
      blockingClient,
      store: { redisKey: (key: string) => key },
    } as never);
  } catch (thrown) {
    error = thrown as Error;
  }
  expect(error).toBeInstanceOf(InvalidInputError);
  expect(error?.message).toMatch(/keyPrefix \("p{64}"… \(1000000 chars\) and "q:"\)/);
  expect(error?.message.length).toBeLessThan(400);
});
