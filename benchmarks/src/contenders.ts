/**
 * idem and its peers as engine-suite contenders, each through its documented public API and
 * its defaults, given only what the backend needs. Every library stores the same 512-byte
 * JSON result and is keyed by the key alone (no request fingerprint: none of them is given a
 * payload to compare), so each does the least work its API allows.
 */

import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import type { BasePersistenceLayer } from '@aws-lambda-powertools/idempotency/persistence';
import { createIdempotency, type IdempotencyStore } from '@idem/core';
import { Idempotency } from '@node-idempotency/core';
import type { Contender } from './engine-suite.js';
import { forEachConcurrently, PREPARE_CONCURRENCY } from './measure.js';
import { checkReplayed, mustNotRun, resultFor } from './payload.js';

/** idem: `createIdempotency({ store }).execute({ key }, operation)`, all defaults. */
export function idemContender(openStore: () => IdempotencyStore): Contender {
  let engine = createIdempotency<ReturnType<typeof resultFor>>({ store: openStore() });
  const cycle = async (key: string) => {
    const { replayed } = await engine.execute({ key }, async () => resultFor(key));
    if (replayed) throw new Error(`idem: the first execution of ${key} was a replay`);
  };
  return {
    name: 'idem',
    role: 'idem',
    async prepare(keys) {
      engine = createIdempotency({ store: openStore() });
      await forEachConcurrently(keys, PREPARE_CONCURRENCY, cycle);
    },
    cycle,
    async replay(key) {
      const { value, replayed } = await engine.execute({ key }, async () => mustNotRun('idem'));
      if (!replayed) throw new Error(`idem: ${key} was not replayed`);
      checkReplayed(key, value, 'idem');
    },
  };
}

// Powertools reads the time a Lambda invocation has left to bound the in-progress lease; out
// of Lambda we give it the lease idem uses by default (30 s), as its docs say to register a
// context, or it warns on every call.
const POWERTOOLS_LEASE_MS = 30_000;

/**
 * AWS Powertools: `makeIdempotent(fn, { persistenceStore, config, keyPrefix })` called with
 * the event `{ key }` (the whole event is the idempotency key, its default), no local cache
 * and no payload validation (both off by default).
 */
export function powertoolsContender(
  openLayer: () => BasePersistenceLayer,
  keyPrefix: string,
): Contender {
  const config = new IdempotencyConfig({});
  config.registerLambdaContext({
    getRemainingTimeInMillis: () => POWERTOOLS_LEASE_MS,
  } as unknown as Parameters<IdempotencyConfig['registerLambdaContext']>[0]);
  const wrap = () => {
    const options = { persistenceStore: openLayer(), config, keyPrefix };
    return {
      run: makeIdempotent(async (event: { key: string }) => resultFor(event.key), options),
      replay: makeIdempotent(async (_event: { key: string }) => mustNotRun('Powertools'), options),
    };
  };
  let fns = wrap();
  return {
    name: 'Powertools',
    role: 'peer',
    async prepare(keys) {
      fns = wrap();
      await forEachConcurrently(keys, PREPARE_CONCURRENCY, async (key) => {
        await fns.run({ key });
      });
    },
    async cycle(key) {
      const value = await fns.run({ key });
      if (value.key !== key) throw new Error(`Powertools: wrong result for ${key}`);
    },
    async replay(key) {
      checkReplayed(key, await fns.replay({ key }), 'Powertools');
    },
  };
}

/** What `@node-idempotency/core` needs of a storage adapter. */
type NodeIdempotencyStorage = ConstructorParameters<typeof Idempotency>[0];

/**
 * @node-idempotency/core: `onRequest` before the operation, `onResponse` after it, on a
 * request with the key in its `Idempotency-Key` header and no body (so no fingerprint).
 */
export function nodeIdempotencyContender(
  openStorage: () => NodeIdempotencyStorage,
  cacheKeyPrefix: string,
): Contender {
  let engine = new Idempotency(openStorage(), { cacheKeyPrefix });
  const request = (key: string) => ({
    method: 'POST',
    path: '/op',
    headers: { 'idempotency-key': key },
  });
  const cycle = async (key: string) => {
    const req = request(key);
    if ((await engine.onRequest(req)) !== undefined) {
      throw new Error(`node-idempotency: the first execution of ${key} was a replay`);
    }
    await engine.onResponse(req, { body: resultFor(key) });
  };
  return {
    name: 'node-idempotency',
    role: 'peer',
    async prepare(keys) {
      engine = new Idempotency(openStorage(), { cacheKeyPrefix });
      await forEachConcurrently(keys, PREPARE_CONCURRENCY, cycle);
    },
    cycle,
    async replay(key) {
      const cached = await engine.onRequest(request(key));
      checkReplayed(key, cached?.body, 'node-idempotency');
    },
  };
}
