import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler, type HttpIdempotencyOptions } from '../src/index.js';

// rev10: options that protect nothing, or are silently ignored, at creation. Each is a
// plain-JavaScript (or `as` cast) mistake that TypeScript users would also make through a
// config file read at runtime.

const invalid = expect.objectContaining({ code: 'INVALID_INPUT' });
const create = (options: Record<string, unknown>) =>
  createIdempotencyHandler({
    store: createMemoryStore(),
    scope: 'global',
    ...options,
  } as HttpIdempotencyOptions);

async function postWithoutKey(options: Record<string, unknown>): Promise<number> {
  const handler = create(options);
  const response = await handler.handle(
    new Request('http://localhost/charges', { method: 'POST', body: '{}' }),
    () => new Response('ran', { status: 201 }),
  );
  return response.status;
}

describe('rev10 options', () => {
  // FIXED (was FINDING LOW): methods: [] is accepted and makes every request pass through unprotected (a POST without a key runs, 201); a misspelt top-level or nested option (retention, fingerprint.querry, liveStreams.mediatypes) is ignored without a word
  it('methods: [] (nothing protected) is refused at creation', () => {
    // Observed: accepted; a keyless POST then runs (201) instead of 400.
    expect(() => create({ methods: [] })).toThrow(invalid);
  });

  it('an unknown option name is refused (or warned) at creation', () => {
    const warnings: string[] = [];
    const attempts = [
      { retention: 5_000 },
      { fingerprint: { querry: false } },
      { liveStreams: { mediatypes: ['text/plain'] } },
    ];
    let refused = 0;
    for (const extra of attempts) {
      try {
        create({ ...extra, onWarning: (message: string) => warnings.push(message) });
      } catch {
        refused++;
      }
    }
    expect(refused + warnings.length).toBe(attempts.length);
    // Refused with the typed error, naming the option.
    expect(() => create({ retention: 5_000 })).toThrow(
      expect.objectContaining({
        code: 'INVALID_INPUT',
        message: expect.stringMatching(/^retention /),
      }),
    );
    expect(() => create({ fingerprint: { querry: false } })).toThrow(/fingerprint\.querry/);
    for (const defaultCharset of ['', 'iso 8859-1', 'utf-8;x', 8])
      expect(() => create({ fingerprint: { defaultCharset } as never })).toThrow(
        /fingerprint\.defaultCharset/,
      );
    expect(() => create({ liveStreams: { mediatypes: ['text/plain'] } })).toThrow(
      /liveStreams\.mediatypes.*liveStreams\.mediaTypes/,
    );
    expect(() => create({ wait: { timeoutMs: 100, polMs: 5 } })).toThrow(/wait\.polMs/);
    expect(() => create({ methods: [] })).toThrow(/methods/);
  });

  it('every option name of the type is still taken; an unknown name set to undefined passes', () => {
    expect(() =>
      create({
        leaseMs: 30_000,
        heartbeatMs: false,
        maxHoldMs: 60_000,
        retentionMs: 60_000,
        storeTimeoutMs: 1_000,
        completionWaitMs: 1_000,
        maxOutcomeBytes: 1_000,
        wait: { timeoutMs: 100, pollMs: 10 },
        onEvent: () => {},
        methods: ['POST'],
        required: true,
        headerName: 'Idempotency-Key',
        fingerprint: {
          headers: ['x-a'],
          exclude: ['a.b'],
          query: true,
          extras: () => ({}),
          defaultCharset: 'iso-8859-1',
        },
        isFinal: () => true,
        recordedHeaders: ['x-a'],
        maxBodyBytes: 10,
        failOpen: false,
        inProgressRetryAfterSeconds: 1,
        unavailableRetryAfterSeconds: 1,
        onWarning: () => {},
        liveStreams: false,
        retention: undefined,
      }),
    ).not.toThrow();
  });

  it('held: a keyless POST with the defaults is 400; methods: [] (which let it pass, 201) is refused', async () => {
    expect(await postWithoutKey({})).toBe(400);
    await expect(postWithoutKey({ methods: [] })).rejects.toThrow(invalid);
  });

  it('held: Set-Cookie, hop-by-hop and replay-marker names in recordedHeaders are refused in any case', () => {
    for (const name of [
      'SET-COOKIE',
      'Transfer-Encoding',
      'Idempotent-Replayed',
      'Content-Length',
    ]) {
      expect(() => create({ recordedHeaders: [name] }), name).toThrow(invalid);
    }
  });
});
