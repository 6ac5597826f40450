/**
 * rv21: adversarial review of lease21's re-sent renewal (a renewal answered "kept" while the
 * clock reads behind where elapsed time since the lease's last write puts it is sent again,
 * counted from that reading). Against DynamoDB Local; the raw item is read through the
 * fixture's second channel.
 */
import { type IdempotencyStore, ManualClock } from '@idem/core';
import { expect, it } from 'vitest';
import { layouts } from './dynamodb-env.js';
import { steppedStore } from './stepped-store.js';
import { setup } from './store-fixture.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const RETAIN = 60_000;
const NOT_OWNER = { ok: false, reason: 'not_owner' };

type Raw = Record<string, { N?: string; S?: string }>;
const rawOf = async (base: { raw(key: string): Promise<unknown> }) =>
  ((await base.raw('k')) ?? {}) as Raw;
const leaseOf = async (base: { raw(key: string): Promise<unknown> }) =>
  Number((await rawOf(base)).leaseUntil?.N);

/** `owner`'s acquisition and renewals of the key `k`. */
const acquireAs = (store: IdempotencyStore, owner: string, leaseMs: number) =>
  store.acquire({ key: 'k', fingerprint: 'f', owner, leaseMs, retentionMs: RETAIN });
const extendAs = (store: IdempotencyStore, owner: string, leaseMs: number) =>
  store.extend({ key: 'k', owner, leaseMs, retentionMs: RETAIN });

it('held: a process whose clock stepped back cannot extend a lease another process took over (not_owner, the item untouched)', async () => {
  const a = steppedStore();
  // A acquires a 300 ms lease, then its clock steps back a minute.
  expect((await acquireAs(a.store, 'a', 300)).kind).toBe('acquired');
  a.step(-60_000);
  await sleep(400);
  // B (a store with a correct clock on the same table and prefix) takes the key over.
  const b = steppedStore(a);
  expect((await acquireAs(b.store, 'b', 5_000)).kind).toBe('acquired');
  const before = await rawOf(a);
  a.take();
  // A's renewals: refused, once each (no re-send of a refused one).
  expect(await extendAs(a.store, 'a', 300)).toEqual(NOT_OWNER);
  expect(await extendAs(a.store, 'a', 300)).toEqual(NOT_OWNER);
  expect(a.take()).toEqual(['extend', 'extend']);
  expect(await rawOf(a)).toEqual(before);
  expect(before.owner?.S).toBe('b');
});

it('held: after an operator force-released the record, the stepped-back owner cannot renew it', async () => {
  const a = steppedStore();
  await acquireAs(a.store, 'a', 2_000);
  await sleep(150);
  a.step(-60_000);
  const admin = a.store.admin;
  if (!admin) throw new Error('the store has an admin');
  await admin.forceRelease('k');
  const before = await rawOf(a);
  expect(before.status?.S).toBe('released');
  expect(await extendAs(a.store, 'a', 2_000)).toEqual(NOT_OWNER);
  expect(await rawOf(a)).toEqual(before);
});

it('held: no loop: a stepped-back renewal is sent at most twice, and so is each later one (never more requests)', async () => {
  const a = steppedStore();
  await acquireAs(a.store, 'a', 3_000);
  await sleep(200);
  a.step(-60_000);
  a.take();
  expect((await extendAs(a.store, 'a', 3_000)).ok).toBe(true);
  expect(a.take()).toEqual(['extend', 'extend']);
  await sleep(150);
  expect((await extendAs(a.store, 'a', 3_000)).ok).toBe(true);
  // Again "kept" (the clock is still a minute behind), and again re-sent once.
  expect(a.take()).toEqual(['extend', 'extend']);
  // The stored lease follows real time: now + lease, within the test's own latency.
  const stored = await leaseOf(a);
  expect(stored - Date.now()).toBeGreaterThan(3_000 - 1_000);
  expect(stored - Date.now()).toBeLessThanOrEqual(3_000);
});

it('held: two processes on one key, both stepped back: only the owner re-sends; the other is refused and changes nothing', async () => {
  const a = steppedStore();
  const b = steppedStore(a);
  await acquireAs(a.store, 'a', 3_000);
  expect((await acquireAs(b.store, 'b', 3_000)).kind).toBe('found');
  await sleep(200);
  a.step(-30_000);
  b.step(-30_000);
  const before = await rawOf(a);
  expect(await extendAs(b.store, 'b', 3_000)).toEqual(NOT_OWNER);
  expect(await rawOf(a)).toEqual(before);
  expect((await extendAs(a.store, 'a', 3_000)).ok).toBe(true);
  const after = await rawOf(a);
  expect(after.owner?.S).toBe('a');
  expect(Number(after.leaseUntil?.N)).toBeGreaterThan(Number(before.leaseUntil?.N));
});

// FINDING (LOW), fixed: with a ManualClock (the store's `capabilities.clock` is 'injectable':
// expiry decided by that clock) that stands still while real time passes, a renewal asking a
// SHORTER lease than the stored one (core's last renewal, cut to the maximum hold) came back
// "kept" and was re-sent counted from real time: the stored lease then ended later than the
// clock allowed, and advancing the clock past the lease did not free the key (a takeover got
// `found`). The re-send is now only for a clock that reads EARLIER than at the lease's last
// write (a step back for sure); one that stands still, or a shorter lease, keeps the stored one.
it("a ManualClock standing still, a renewal shorter than the stored lease: the lease stays the clock's, the key frees when the clock passes it", async () => {
  // Started at the real time: an item whose TTL is long past may be deleted by the service.
  const clock = new ManualClock(Date.now());
  const s = setup(layouts[0]!, { clock });
  await acquireAs(s.store, 'a', 1_000);
  const acquiredUntil = clock.now() + 1_000;
  // Real time passes (the clock does not): more than the gap between the two leases.
  await sleep(350);
  expect(await extendAs(s.store, 'a', 800)).toEqual({ ok: true, leaseUntil: acquiredUntil });
  expect(await leaseOf(s)).toBe(acquiredUntil);
  clock.advance(1_001);
  expect((await acquireAs(s.store, 'b', 1_000)).kind).toBe('acquired');
});

// FINDING (MEDIUM), open (README "Clock" corrected): lease21 handles a step back only when it
// is larger than the time since the lease's last write (the renewal then asks for an end
// earlier than the stored one: "kept"). A smaller step, the common one (NTP steps a few hundred
// ms to a few s; renewals go a heartbeat apart, 10 s by default), leaves the renewal asking for
// a later end than the stored one: it lands, short by the step, core's estimate (elapsed time
// from the send) outlives the stored lease by the step, and every later renewal is as short.
// Counting every renewal from elapsed time (not only a kept one) would fix it, but would also
// count a ManualClock that stands still while real time passes (the conformance suite's clock)
// as stepped back: its leases would follow real time, not the clock.
it.fails("a step back of 400 ms, 600 ms after the lease's last write: the renewal still ends the lease where elapsed time puts it", async () => {
  const a = steppedStore();
  await acquireAs(a.store, 'a', 3_000);
  await sleep(600);
  a.step(-400);
  const t0 = Date.now();
  expect((await extendAs(a.store, 'a', 3_000)).ok).toBe(true);
  // Without the step the renewal would end the lease at (its send) + 3 000 >= t0 + 3 000; less
  // the 100 ms the store lets pass as NTP slew.
  expect(await leaseOf(a)).toBeGreaterThanOrEqual(t0 + 3_000 - 100);
});

// FINDING (LOW), open: an acquisition delivered again by its owner after the step (the store
// contract's redelivery: the same owner acquiring its own live record) is answered with the
// stored, later lease, but the held lease is recorded as counted from the stepped reading:
// later renewals see no step, and the stored lease is left where it was (the rev20 case). Core
// never redelivers an acquisition across calls (each call has its own owner); an SDK retry
// within one call would need the step inside that call.
it.fails('a redelivered acquisition after the step keeps the re-send working (the lease keeps following real time)', async () => {
  const a = steppedStore();
  await acquireAs(a.store, 'a', 3_000);
  await sleep(200);
  a.step(-60_000);
  // The same acquisition delivered again (same owner): its own record, renewed, never shortened.
  expect((await acquireAs(a.store, 'a', 3_000)).kind).toBe('acquired');
  await sleep(200);
  const t0 = Date.now();
  expect((await extendAs(a.store, 'a', 3_000)).ok).toBe(true);
  // Counted from a reading within the last 200 ms of real time: not left at the acquisition's.
  expect(await leaseOf(a)).toBeGreaterThanOrEqual(t0 - 50 + 3_000 - 200);
});
