/**
 * The copy that carries `operationError` (or `policyError`) is linear in the thrown object's own
 * properties: a policy that throws an object of the app's with a huge number of them held the
 * caller for seconds (1e6 properties: about 15 s on a loaded 2-core machine, the corerev4
 * review). Past 1,024 own properties the object is thrown as it is, untouched, like a frozen
 * one. Counted, not timed.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { drainPolicyEngines, policyThrowsOnFailure } from './support/policy-engine.js';

afterEach(drainPolicyEngines);

const policyThrows = policyThrowsOnFailure;

function withProperties(base: object, count: number): object {
  const target = base as Record<string, number>;
  for (let i = 0; i < count; i++) target[`p${i}`] = i;
  return target;
}

describe('a policy error with very many own properties', () => {
  it('an error with 100,000 own properties is thrown as it is, not copied', async () => {
    const thrown = withProperties(new Error('policy'), 100_000);
    const error = await policyThrows(thrown, new Error('op'));
    expect(error).toBe(thrown);
    expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
    expect(Object.hasOwn(thrown, 'cause')).toBe(false);
  });

  it('a plain object with 100,000 own properties too', async () => {
    const thrown = withProperties({}, 100_000);
    expect(await policyThrows(thrown, new Error('op'))).toBe(thrown);
    expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
  });

  it('an error with a few hundred is still copied and carries the operation error', async () => {
    const thrown = withProperties(new Error('policy'), 500);
    const opError = new Error('op');
    const error = (await policyThrows(thrown, opError)) as Record<string, unknown>;
    expect(error).not.toBe(thrown);
    expect(error.operationError).toBe(opError);
    expect(error.p499).toBe(499);
    expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
  });
});
