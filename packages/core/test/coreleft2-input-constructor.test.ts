/**
 * coreleft2: the INVALID_INPUT errors that are also a RangeError or a TypeError (from
 * `invalidRangeInput` / `invalidTypeInput`: createAdmission's options, ManualClock, otel's and
 * fastify's options) answered an internal class as `error.constructor`. It is now the public
 * `InvalidInputError`, with nothing else changed: still a RangeError (TypeError), named so, an
 * InvalidInputError and an IdemError of this copy and of another (the CommonJS build).
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import * as esm from '../src/index.js';
import { thrown } from './support/settle.js';

const require = createRequire(import.meta.url);
const cjs = require('@idem/core') as typeof esm;

describe('coreleft2: error.constructor of the range/type INVALID_INPUT errors', () => {
  for (const core of [esm, cjs]) {
    const copy = core === esm ? 'ES module' : 'CommonJS';
    const made: [string, () => unknown, ErrorConstructor][] = [
      [
        'createAdmission({ targetLatencyMs: 0 })',
        () => thrown(() => core.createAdmission({ targetLatencyMs: 0 })),
        RangeError,
      ],
      ['invalidRangeInput', () => core.invalidRangeInput('out of range'), RangeError],
      ['invalidTypeInput', () => core.invalidTypeInput('wrong type'), TypeError],
    ];
    for (const [label, make, Builtin] of made) {
      it(`${copy}, ${label}: constructor is InvalidInputError, the rest as before`, () => {
        const error = make() as Error & { code?: string };
        expect(error.constructor).toBe(core.InvalidInputError);
        expect(error.constructor.name).toBe('InvalidInputError');
        expect(error instanceof error.constructor).toBe(true);
        expect(error).toBeInstanceOf(Builtin);
        expect(error).toBeInstanceOf(Error);
        expect(error.name).toBe(Builtin.name);
        expect(String(error)).toMatch(new RegExp(`^${Builtin.name}: `));
        expect(error.code).toBe('INVALID_INPUT');
        // Every copy's classes and isIdemError agree, and no other class.
        for (const other of [esm, cjs]) {
          expect(error).toBeInstanceOf(other.InvalidInputError);
          expect(error).toBeInstanceOf(other.IdemError);
          expect(other.isIdemError(error, 'INVALID_INPUT')).toBe(true);
          expect(error instanceof other.StoreUnavailableError).toBe(false);
          expect(error instanceof other.InvalidKeyError).toBe(false);
        }
        expect(Object.keys(error)).toEqual(['code']);
        // `constructor` is not an own or enumerable property of the error.
        expect(Object.hasOwn(error, 'constructor')).toBe(false);
      });
    }
  }

  it('an InvalidInputError made with new is unchanged', () => {
    const error = new esm.InvalidInputError('bad');
    expect(error.constructor).toBe(esm.InvalidInputError);
    expect(error.name).toBe('InvalidInputError');
    expect(error).not.toBeInstanceOf(RangeError);
    expect(esm.InvalidInputError.name).toBe('InvalidInputError');
  });
});
