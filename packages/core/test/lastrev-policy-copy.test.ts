/**
 * lastrev: the copy of a store's error that carries `policyError` (see coreleft-policy-error)
 * is made without running the error's constructor, so a getter of its class reading a private
 * field (`#detail`) threw a TypeError on it where it answered on the store's error.
 */
import { afterEach, expect, it } from 'vitest';
import { StoreFullError } from '../src/index.js';
import { drainPolicyEngines, thrownWith } from './support/policy-engine.js';

afterEach(drainPolicyEngines);

class DetailedFull extends StoreFullError {
  #detail: string;
  constructor(message: string, detail: string) {
    super(message);
    this.#detail = detail;
  }
  get detail(): string {
    return this.#detail;
  }
}

it('a getter reading a private field answers on the copy as on the store error', async () => {
  const shared = new DetailedFull('full', 'shard 3');
  const bug = new Error('policy bug');
  const thrown = (await thrownWith(shared, bug)) as DetailedFull & { policyError?: unknown };
  expect(thrown).toBeInstanceOf(DetailedFull);
  expect(thrown.policyError).toBe(bug);
  expect(thrown.detail).toBe('shard 3');
  // The shared error is untouched.
  expect(Object.hasOwn(shared, 'policyError')).toBe(false);
  expect(Object.hasOwn(shared, 'detail')).toBe(false);
});
