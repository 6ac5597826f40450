/**
 * coreerr30: `instanceof IdemClientError` recognised another copy's error (the CommonJS build
 * beside the ES module one) by the name of its class only, so an app's own class named
 * `IdemClientError`, built on another copy of core, was taken for this package's (and
 * `isIdemClientError` said yes). The class now carries core's registered class mark, as core's
 * own classes do: another copy's is recognised by it, a namesake is not, a minified copy still is.
 * Checked against the built CommonJS file (run the build first).
 */
import { createRequire } from 'node:module';
import { expect, it } from 'vitest';
import { markedClassTests } from '../../../scripts/error-class-marks.js';
import { IdemClientError, isIdemClientError } from '../src/index.js';

const require = createRequire(import.meta.url);
const otherCore = require('@idem/core') as typeof import('@idem/core');
const theirs = require('../dist/index.cjs') as typeof import('../src/index.js');

markedClassTests(import.meta.url, [
  {
    name: 'IdemClientError',
    ours: IdemClientError,
    make: (C) => new C('RETRIES_EXHAUSTED', 'x', { attempts: 2 }),
  },
]);

it("isIdemClientError: a namesake on another copy of core is not one, the CommonJS build's is", () => {
  const Namesake = class extends otherCore.IdemError<string> {};
  Object.defineProperty(Namesake, 'name', { value: 'IdemClientError' });
  expect(isIdemClientError(new Namesake('RETRIES_EXHAUSTED', 'not the client'))).toBe(false);
  const real = new theirs.IdemClientError('DEADLINE_EXCEEDED', 'y');
  expect(isIdemClientError(real, 'DEADLINE_EXCEEDED')).toBe(true);
});
