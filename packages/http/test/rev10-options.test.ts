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
  // FINDING (LOW): methods: [] is accepted and makes every request pass through unprotected (a POST without a key runs, 201); a misspelt top-level or nested option (retention, fingerprint.querry, liveStreams.mediatypes) is ignored without a word
  it.fails('methods: [] (nothing protected) is refused at creation', () => {
    // Observed: accepted; a keyless POST then runs (201) instead of 400.
    expect(() => create({ methods: [] })).toThrow(invalid);
  });

  it.fails('an unknown option name is refused (or warned) at creation', () => {
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
  });

  it('held: a keyless POST with the defaults is 400; with methods: [] it passes (what the finding is about)', async () => {
    expect(await postWithoutKey({})).toBe(400);
    expect(await postWithoutKey({ methods: [] })).toBe(201);
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
