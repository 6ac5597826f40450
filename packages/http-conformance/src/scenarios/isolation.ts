import { expect } from 'vitest';
import { json } from '../client.js';
import {
  expectProblem,
  expectReplayOf,
  newKey,
  PROBLEM,
  REPLAYED,
  type Scenario,
  startSlowCharge,
} from '../kit.js';

const group = 'isolation';

/** Keys never meet across principals or routes; one route's path variants never run twice. */
export const ISOLATION_SCENARIOS: Scenario[] = [
  {
    group,
    name: 'keeps the same key of two tenants apart',
    async run({ post, calls }) {
      const key = newKey();
      const body = { amount: 5 };
      const a = await post('/charges', { key, body, tenant: 'tenant-a' });
      const b = await post('/charges', { key, body, tenant: 'tenant-b' });
      const aAgain = await post('/charges', { key, body, tenant: 'tenant-a' });
      expect(json(a)).toMatchObject({ charge: 1, tenant: 'tenant-a' });
      expect(json(b)).toMatchObject({ charge: 2, tenant: 'tenant-b' });
      expect(b.headers[REPLAYED]).toBeUndefined();
      expectReplayOf(aAgain, a);
      expect(calls('/charges')).toBe(2);
    },
  },
  {
    group,
    name: 'keeps apart tenants whose names differ only in letter case',
    async run({ post, calls }) {
      const key = newKey();
      const body = { amount: 5 };
      const lower = await post('/charges', { key, body, tenant: 'tenant-a' });
      const upper = await post('/charges', { key, body, tenant: 'TENANT-A' });
      expect(json(lower)).toMatchObject({ charge: 1, tenant: 'tenant-a' });
      expect(upper.headers[REPLAYED], 'TENANT-A got the answer of tenant-a').toBeUndefined();
      expect(json(upper)).toMatchObject({ charge: 2, tenant: 'TENANT-A' });
      expectReplayOf(await post('/charges', { key, body, tenant: 'TENANT-A' }), upper);
      expect(calls('/charges')).toBe(2);
    },
  },
  {
    group,
    name: "does not hold one tenant's request on another tenant's key in progress",
    async run(ctx) {
      const key = newKey();
      const first = await startSlowCharge(ctx, key, { tenant: 'tenant-a' });
      const other = await ctx.post('/charges', { key, body: { amount: 1 }, tenant: 'tenant-b' });
      expect(other.status).toBe(201);
      expect(json(other)).toMatchObject({ tenant: 'tenant-b' });
      expect((await first.done).status).toBe(201);
      expect(ctx.calls('/charges')).toBe(2);
    },
  },
  {
    group,
    name: 'answers a 500 no-principal problem when the scope gives no principal, running and storing nothing',
    async run({ post, calls, spy, warnings }) {
      for (const key of [newKey(), newKey()]) {
        expectProblem(
          await post('/charges', { key, body: {}, tenant: null }),
          500,
          PROBLEM.noPrincipal,
        );
      }
      expect(calls('/charges')).toBe(0);
      expect(spy.calls.acquire).toBe(0);
      expect(warnings.some((message) => /principal/.test(message))).toBe(true);
    },
  },
  {
    group,
    name: 'keeps the same key on two routes apart',
    async run({ post, calls }) {
      const key = newKey();
      const charge = await post('/charges', { key, body: { n: 1 } });
      const accept = await post('/accept', { key, body: { n: 1 } });
      expect([charge.status, accept.status]).toEqual([201, 202]);
      expect(accept.headers[REPLAYED]).toBeUndefined();
      expectReplayOf(await post('/charges', { key, body: { n: 1 } }), charge);
      expectReplayOf(await post('/accept', { key, body: { n: 1 } }), accept);
      expect([calls('/charges'), calls('/accept')]).toEqual([1, 1]);
    },
  },
  {
    group,
    name: 'never runs a route twice through a path variant (/charges/, /CHARGES): replay, 422 or not routed',
    async run({ post, calls }) {
      const body = { amount: 9 };
      const variants = ['/charges/', '/CHARGES'];
      // Either order: the canonical path first, then a variant first.
      const key = newKey();
      const first = await post('/charges', { key, body });
      expect(first.status).toBe(201);
      for (const variant of variants) {
        const again = await post(variant, { key, body });
        // The framework does not route it to the handler; or it does not, but the layer
        // merges more spellings than the router and refuses it first (422): both safe.
        if (again.status === 404) continue;
        if (again.status === 422) expectProblem(again, 422, PROBLEM.keyReused);
        else expectReplayOf(again, first);
      }
      expect(calls('/charges'), 'executions through path variants of one key').toBe(1);
      let routed = 0;
      for (const variant of variants) {
        const variantKey = newKey();
        const viaVariant = await post(variant, { key: variantKey, body });
        if (viaVariant.status === 404) continue;
        routed++;
        expect(viaVariant.status).toBe(201);
        const canonical = await post('/charges', { key: variantKey, body });
        if (canonical.status === 422) expectProblem(canonical, 422, PROBLEM.keyReused);
        else expectReplayOf(canonical, viaVariant);
      }
      expect(calls('/charges')).toBe(1 + routed);
    },
  },
];
