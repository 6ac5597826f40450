import { invalidRangeInput } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, type IdempotentFetchOptions } from '../src/index.js';

// rev20 (review): options that were taken without a word. A misspelt option took its default
// (`maxAttempt: 1` left five attempts; `resumeStreams: { maxResume: 0 }` left five resumes),
// and `headerName` could name a header the client writes itself (the caller's Content-Type
// was then read as an existing key).
/**
 * What a refused option throws: an `InvalidInputError` (INVALID_INPUT) that is still a
 * `RangeError`, with exactly `message` (vitest's `toThrow(error)` matches the prototype too).
 */
const refusal = (message: string) => invalidRangeInput(message);
const make = (options: unknown) => () => createIdempotentFetch(options as IdempotentFetchOptions);

describe('rev20 client: option names and the key header', () => {
  it('refuses an option name it does not have, naming the near one', () => {
    expect(make({ maxAttempt: 1 })).toThrow(
      refusal('maxAttempt is not an option of @idem/client (did you mean maxAttempts?)'),
    );
    expect(make({ deadline: 5_000 })).toThrow(/deadline is not an option.*deadlineMs/);
    expect(make({ retries: 3 })).toThrow(refusal('retries is not an option of @idem/client'));
  });

  it('refuses a misspelt resumeStreams option', () => {
    expect(make({ resumeStreams: { maxResume: 0 } })).toThrow(
      refusal(
        'resumeStreams.maxResume is not an option of @idem/client (did you mean resumeStreams.maxResumes?)',
      ),
    );
    expect(make({ resumeStreams: { max: 1, maxResumes: 2 } })).toThrow(RangeError);
  });

  it('takes a name set to undefined, and every option it has', () => {
    expect(make({ maxAttempt: undefined, resumeStreams: { maxResume: undefined } })).not.toThrow();
    expect(
      make({
        fetch: globalThis.fetch,
        methods: ['POST'],
        key: 'random',
        headerName: 'X-Request-Key',
        keyFormat: 'bare',
        resumeStreams: { maxResumes: 2 },
        replayHeader: 'X-Replayed',
        maxAttempts: 3,
        initialDelayMs: 10,
        maxDelayMs: 100,
        minDelayMs: 5,
        maxRetryAfterMs: 1_000,
        inProgressWaitMs: 1_000,
        maxInProgressAttempts: 2,
        isInProgress: () => false,
        attemptTimeoutMs: 1_000,
        deadlineMs: 5_000,
        isRetryableStatus: () => false,
        maxBufferedBodyBytes: 1_024,
        onAttempt: () => {},
        sleep: async () => {},
        random: () => 0.5,
        now: () => 0,
      }),
    ).not.toThrow();
  });

  it('refuses as headerName a header the client sets or reads itself, in any case', () => {
    for (const name of [
      'Content-Type',
      'content-length',
      'Last-Event-ID',
      'Idempotent-Generation',
      'Transfer-Encoding',
      'HOST',
    ])
      expect(make({ headerName: name })).toThrow(
        refusal(`headerName must not be ${name}: the client sets or reads that header itself`),
      );
    expect(make({ headerName: 'Idempotency-Key' })).not.toThrow();
  });
});
