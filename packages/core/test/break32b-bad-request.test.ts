// break32b: a request, an operation or begin options of the wrong type are INVALID_INPUT
// before anything is acquired. Before the fix `execute(null, op)` and `begin(null)` threw a
// raw TypeError (reading `fingerprint` of null), `begin(req, { signal: 'x' })` a raw
// TypeError (`throwIfAborted is not a function`), and `execute(req, 5)` acquired the key,
// threw a raw TypeError, and released it again (a store round trip for a programming error).
import { describe, expect, it } from 'vitest';
import { createIdempotency, InvalidInputError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

describe('break32b: bad requests to execute and begin', () => {
  const cases: [string, (idem: ReturnType<typeof createIdempotency>) => Promise<unknown>][] = [
    ['execute(null)', (idem) => idem.execute(null as never, async () => 1)],
    ['execute(req, 5)', (idem) => idem.execute({ key: 'k' }, 5 as never)],
    ['begin(null)', (idem) => idem.begin(null as never)],
    ['begin(req, 5)', (idem) => idem.begin({ key: 'k' }, 5 as never)],
    ["begin(req, { signal: 'x' })", (idem) => idem.begin({ key: 'k' }, { signal: 'x' } as never)],
    [
      'begin(req, { signal: { aborted: false } })',
      (idem) => idem.begin({ key: 'k' }, { signal: { aborted: false } } as never),
    ],
  ];
  for (const [name, call] of cases) {
    it(`${name}: INVALID_INPUT, no store call`, async () => {
      const store = new FakeStore();
      let calls = 0;
      for (const method of ['acquire', 'release', 'complete'] as const) {
        const original = store[method].bind(store) as (...args: unknown[]) => unknown;
        (store as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
          calls++;
          return original(...args);
        };
      }
      const idem = createIdempotency({ store });
      const failure = await call(idem).then(
        () => 'answered',
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(InvalidInputError);
      expect(calls).toBe(0);
    });
  }

  it('an AbortSignal (and none) is still taken', async () => {
    const idem = createIdempotency({ store: new FakeStore() });
    expect((await idem.begin({ key: 'a' }, { signal: new AbortController().signal })).kind).toBe(
      'acquired',
    );
    expect((await idem.begin({ key: 'b' }, {})).kind).toBe('acquired');
    expect((await idem.begin({ key: 'c' })).kind).toBe('acquired');
  });
});
