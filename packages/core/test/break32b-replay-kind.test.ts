// break32b: `execute` replays only what was recorded as a value (by `execute`, or an
// integration writing its form); anything else under the same scope and key is
// OUTCOME_CORRUPT, never a replay and never an untyped error. Before the fix an outcome that
// `begin` recorded (an HTTP response: status metadata, a body) was handed to the serializer
// as if it were a value: a JSON body replayed as `execute`'s value (a value no operation of
// this `execute` returned), any other body a raw SyntaxError; a `failure` record without its
// failure a raw TypeError; a custom serializer's `deserialize` that throws its own error.
import { describe, expect, it } from 'vitest';
import { createIdempotency, type OutcomeSerializer } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const bytes = (text: string) => new TextEncoder().encode(text);

async function recordThroughBegin(
  idem: ReturnType<typeof createIdempotency>,
  key: string,
  outcome: { meta: Record<string, unknown>; body: Uint8Array },
) {
  const begun = await idem.begin({ key, scope: 'shared' });
  if (begun.kind !== 'acquired') throw new Error('expected an acquisition');
  await begun.execution.complete(outcome as never);
}

describe('break32b: execute replays only recorded values', () => {
  const cases: [string, { meta: Record<string, unknown>; body: Uint8Array }][] = [
    ['an HTTP response with a JSON body', { meta: { status: 201 }, body: bytes('{"id":7}') }],
    ['an HTTP response with a text body', { meta: { status: 200 }, body: bytes('hello') }],
    ['a failure record without its failure', { meta: { kind: 'failure' }, body: bytes('') }],
  ];
  for (const [name, outcome] of cases) {
    it(`${name}: OUTCOME_CORRUPT, the operation not run`, async () => {
      const idem = createIdempotency({ store: new FakeStore() });
      await recordThroughBegin(idem, 'k', outcome);
      let runs = 0;
      const failure = await idem
        .execute({ key: 'k', scope: 'shared' }, async () => ++runs)
        .then(
          (answer) => ({ answer }),
          (error: unknown) => error,
        );
      expect(failure).toMatchObject({ code: 'OUTCOME_CORRUPT' });
      expect(runs).toBe(0);
    });
  }

  it('a serializer whose deserialize throws: OUTCOME_CORRUPT with its error as cause', async () => {
    const broken = new Error('cannot read');
    const serializer: OutcomeSerializer<string> = {
      serialize: (value) => ({ meta: {}, body: bytes(value) }),
      deserialize: () => {
        throw broken;
      },
    };
    const idem = createIdempotency({ store: new FakeStore(), serializer });
    expect(await idem.execute({ key: 'k', scope: 's' }, async () => 'v')).toEqual({
      value: 'v',
      replayed: false,
    });
    const failure = await idem
      .execute({ key: 'k', scope: 's' }, async () => 'again')
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'OUTCOME_CORRUPT', cause: broken });
  });

  it('values execute recorded still replay (JSON, undefined, bytes)', async () => {
    const idem = createIdempotency({ store: new FakeStore() });
    for (const [key, value] of [
      ['a', { x: 1 }],
      ['b', undefined],
      ['c', 'text'],
    ] as const) {
      await idem.execute({ key, scope: 's' }, async () => value);
      expect(await idem.execute({ key, scope: 's' }, async () => 'no')).toEqual({
        value,
        replayed: true,
      });
    }
  });
});
