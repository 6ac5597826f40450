/**
 * coreleft2: the copy of a store's error that carries `policyError` is made without running
 * its class's constructor. A getter reading a private field answers on it (lastrev); a METHOD
 * reading one throws, and is left so (see the core README: no sound way to give the copy the
 * private state; a Proxy neither passes the private-field check nor stays a native error).
 * Pinned here, with the facts the README gives, on whichever Node runs the test (20 and 24).
 */
import { types } from 'node:util';
import { afterEach, expect, it } from 'vitest';
import { StoreFullError } from '../src/index.js';
import { drainPolicyEngines, thrownWith } from './support/policy-engine.js';

afterEach(drainPolicyEngines);

class ShardFull extends StoreFullError {
  #shard: number;
  constructor(shard: number) {
    super(`shard ${shard} full`);
    this.#shard = shard;
  }
  get shard(): number {
    return this.#shard;
  }
  describe(): string {
    return `shard ${this.#shard}`;
  }
  label(): string {
    return `${this.code}: ${this.message}`;
  }
}

it('the copy: getters and methods on public state answer, a method on private state throws; the copy stays a native, cloneable error', async () => {
  const shared = new ShardFull(3);
  const bug = new Error('policy bug');
  const copy = (await thrownWith(shared, bug)) as ShardFull & { policyError?: unknown };
  expect(copy).not.toBe(shared);
  expect(copy).toBeInstanceOf(ShardFull);
  expect(copy.policyError).toBe(bug);
  expect(copy.shard).toBe(3);
  expect(copy.label()).toBe('STORE_FULL: shard 3 full');
  expect(shared.describe()).toBe('shard 3');
  expect(() => copy.describe()).toThrow(TypeError);
  // What a Proxy would have lost: the copy is a native error, and clones as one.
  expect(types.isNativeError(copy)).toBe(true);
  expect(structuredClone(copy)).toMatchObject({ message: 'shard 3 full' });
  expect(Object.hasOwn(shared, 'policyError')).toBe(false);
});

it('why no Proxy: a private-field method fails through one too, and a Proxy is no native error', () => {
  const error = new ShardFull(4);
  const proxy = new Proxy(error, {});
  expect(() => proxy.describe()).toThrow(TypeError);
  expect(types.isNativeError(proxy)).toBe(false);
  expect(() => structuredClone(proxy)).toThrow();
});
