/**
 * corerev3: a policy that throws about a failure gets a copy of what it threw, carrying the
 * operation's error (coreleft2). The copy was made as a native error on the thrown object's
 * prototype whatever it was: a Date, a Map or an array thrown by the policy came back as a
 * broken object (its methods threw, `JSON.stringify` of the Date threw, `Array.isArray` said
 * false) and a plain object came back as an `Error` with a stack of its own. Built-in and host
 * objects are now thrown as they are (their state lives in internal slots nothing copies); an
 * ordinary object is copied as an ordinary object.
 */
import { types } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { drainPolicyEngines, policyThrowsOnFailure } from './support/policy-engine.js';

afterEach(drainPolicyEngines);

/** What `execute` throws when the operation throws `opError` and the policy throws `thrown`. */
const policyThrows = (thrown: unknown, opError: unknown = new Error('op')) =>
  policyThrowsOnFailure(thrown, opError);

describe('corerev3: what the policy throws about a failure, when it is no error', () => {
  it('a Date, a Map, an array, a URL: thrown as they are, whole (no broken copy)', async () => {
    const date = new Date(0);
    const map = new Map([['rule', 'x']]);
    const list = ['a', 'b'];
    const url = new URL('http://127.0.0.1/policy');
    for (const thrown of [date, map, list, url]) {
      const error = await policyThrows(thrown);
      expect(error, Object.prototype.toString.call(thrown)).toBe(thrown);
      expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
    }
    const again = (await policyThrows(date)) as Date;
    expect(again.getTime()).toBe(0);
    expect(JSON.stringify(again)).toBe('"1970-01-01T00:00:00.000Z"');
    expect(((await policyThrows(map)) as Map<string, string>).get('rule')).toBe('x');
    expect(Array.isArray(await policyThrows(list))).toBe(true);
  });

  it('a plain object: a plain-object copy carrying the operation error, not an Error with a stack', async () => {
    const thrown = { reason: 'policy bug' };
    const opError = new Error('op');
    const error = (await policyThrows(thrown, opError)) as Record<string, unknown>;
    expect(error).not.toBe(thrown);
    expect(Object.getPrototypeOf(error)).toBe(Object.prototype);
    expect(Object.prototype.toString.call(error)).toBe('[object Object]');
    expect(types.isNativeError(error)).toBe(false);
    expect(Object.hasOwn(error, 'stack')).toBe(false);
    expect(error.reason).toBe('policy bug');
    expect(error.operationError).toBe(opError);
    expect(error.cause).toBe(opError);
    expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
  });

  it('an instance of a class that is no error: a copy of its class carrying the operation error', async () => {
    class Problem {
      constructor(readonly status: number) {}
      describe() {
        return `problem ${this.status}`;
      }
    }
    const thrown = new Problem(400);
    const opError = new Error('op');
    const error = (await policyThrows(thrown, opError)) as Problem & { operationError?: unknown };
    expect(error).toBeInstanceOf(Problem);
    expect(error).not.toBe(thrown);
    expect(error.describe()).toBe('problem 400');
    expect(types.isNativeError(error)).toBe(false);
    expect(error.operationError).toBe(opError);
    expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
  });
});
