/**
 * originrev: a model of the store contract's "Origin" rules (`IdempotencyStore.acquire`),
 * run step by step against a real store with fast-check's operation sequences. Every answer
 * is compared with what the model says the contract asks for: the origin of every
 * acquisition (a free key begins one, a takeover and a retry after a release carry it, a
 * redelivery answers it, forceRelease keeps it, delete forgets it), `takeover`, the fence
 * where the contract fixes it, owner-checked writes, and the origin `get()` shows.
 *
 * Two clocks:
 * - `manual` (memory, DynamoDB: the injectable clock): deadlines are exact, and the time
 *   steps land exactly on a deadline (`edge`) or one millisecond before (`edgeMinus1`), the
 *   boundary where "expiresAt passed" is decided (`now >= expiresAt`).
 * - `server` (Redis, PostgreSQL): the store's clock is the host's; deadlines are known
 *   within the call's round trip, and before every step the model waits until no deadline
 *   of the key is within [now - 30 ms, now + 150 ms], so that no answer is ambiguous.
 *
 * `race` sends two or three acquires of one key at once (fresh owners, and optionally the
 * current owner's redelivery) and accepts the answers only if some serial order of them gives
 * exactly those answers (a linearizability check of the origin), then goes on from that order.
 *
 * Used by the originrev-model-*.test.ts files of the store packages.
 */
import { randomBytes } from 'node:crypto';
import type {
  AcquireResult,
  IdempotencyStore,
  ManualClock,
  StoreAdmin,
  StoredRecord,
} from '@idem/core';
import fc from 'fast-check';

/** A deadline: exact (`lo === hi`) by a manual clock, known within a round trip by a server's. */
interface Deadline {
  lo: number;
  hi: number;
}

interface ModelRecord {
  status: 'in_progress' | 'completed' | 'released';
  /** `undefined` after a forced release (the operator's token, which the model does not know). */
  owner: string | undefined;
  origin: string;
  fence: number;
  lease: Deadline;
  expires: Deadline;
  outcome?: string;
}

interface KeyState {
  key: string;
  record: ModelRecord | undefined;
  /** Every owner token that acquired the key (for stale writes and redeliveries). */
  owners: string[];
  /** Highest fence any answer showed for the key. */
  maxFence: number;
}

export type Who = 'new' | 'current' | 'stale';

export type OriginOp =
  | { op: 'acquire'; key: number; who: Who }
  | { op: 'release'; key: number; who: Exclude<Who, 'new'> }
  | { op: 'complete'; key: number; who: Exclude<Who, 'new'> }
  | { op: 'force'; key: number }
  | { op: 'delete'; key: number }
  | { op: 'get'; key: number }
  | { op: 'race'; key: number; fresh: 2 | 3; withCurrent: boolean }
  | { op: 'advance'; to: 'lease' | 'retention' | 'edge' | 'edgeMinus1'; key: number };

export interface OriginTarget {
  store: IdempotencyStore;
  /** The store's clock: a manual one (injectable-clock stores), or the host's (server). */
  clock: { kind: 'manual'; manual: ManualClock } | { kind: 'server' };
  leaseMs: number;
  retentionMs: number;
  /** Fresh storage keys for one run. */
  newKeys(count: number): string[];
  /** Called after every step with the run's keys (a store's own invariants). */
  afterStep?: (keys: string[]) => Promise<void> | void;
}

/** What a run saw, for the report. */
export interface OriginTally {
  runs: number;
  steps: number;
  acquisitions: number;
  carried: number;
  begun: number;
  races: number;
  edges: number;
}

export const newTally = (): OriginTally => ({
  runs: 0,
  steps: 0,
  acquisitions: 0,
  carried: 0,
  begun: 0,
  races: 0,
  edges: 0,
});

const token = () => `o-${randomBytes(8).toString('hex')}`;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const exact = (at: number): Deadline => ({ lo: at, hi: at });
const later = (a: Deadline, b: Deadline): Deadline => ({
  lo: Math.max(a.lo, b.lo),
  hi: Math.max(a.hi, b.hi),
});

export function originOps(clock: 'manual' | 'server', keys = 2): fc.Arbitrary<OriginOp[]> {
  const key = fc.integer({ min: 0, max: keys - 1 });
  const who = fc.constantFrom<Who>('new', 'new', 'current', 'stale');
  const writer = fc.constantFrom<'current' | 'stale'>('current', 'current', 'current', 'stale');
  const times =
    clock === 'manual'
      ? fc.constantFrom<'lease' | 'retention' | 'edge' | 'edgeMinus1'>(
          'lease',
          'retention',
          'edge',
          'edge',
          'edgeMinus1',
        )
      : fc.constantFrom<'lease' | 'retention'>('lease', 'lease', 'retention');
  const op: fc.Arbitrary<OriginOp> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ op: fc.constant('acquire' as const), key, who }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('release' as const), key, who: writer }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('complete' as const), key, who: writer }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('force' as const), key }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), key }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('get' as const), key }) },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant('race' as const),
        key,
        fresh: fc.constantFrom<2 | 3>(2, 3),
        withCurrent: fc.boolean(),
      }),
    },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('advance' as const), to: times, key }) },
  );
  return fc.array(op, { minLength: 3, maxLength: clock === 'manual' ? 24 : 12 });
}

type Expected =
  | { kind: 'found' }
  | {
      kind: 'acquired';
      origin: string;
      takeover: boolean;
      /** The fence the contract fixes (a live record's + 1, a redelivery's own), else undefined. */
      fence: number | undefined;
      redelivery: boolean;
      /** The record that was replaced or renewed (for the new state). */
      was: ModelRecord | undefined;
    };

function fail(message: string, detail: unknown): never {
  throw new Error(`${message}: ${JSON.stringify(detail)}`);
}

/** Runs one operation sequence on fresh keys; throws on the first answer the contract forbids. */
export async function runOriginModel(
  target: OriginTarget,
  ops: OriginOp[],
  tally: OriginTally,
): Promise<void> {
  const { store, leaseMs, retentionMs } = target;
  const admin: StoreAdmin = store.admin ?? fail('the store has no admin', {});
  const manual = target.clock.kind === 'manual' ? target.clock.manual : undefined;
  const keys: KeyState[] = target
    .newKeys(2)
    .map((key) => ({ key, record: undefined, owners: [], maxFence: 0 }));
  const now = () => (manual ? manual.now() : Date.now());
  const log: string[] = [];
  tally.runs++;

  /** live: the record unexpired at `at` (undefined: expired or none). */
  const passed = (d: Deadline, at: number) => {
    if (at >= d.hi) return true;
    if (at < d.lo) return false;
    return fail('ambiguous deadline (the settle step should have waited)', { d, at, log });
  };
  const live = (state: KeyState, at: number): ModelRecord | undefined => {
    const r = state.record;
    if (r && passed(r.expires, at)) state.record = undefined;
    return state.record;
  };

  /** Server clocks: waits until no deadline of `state` is near now (bounded: 10 waits). */
  async function settle(state: KeyState): Promise<void> {
    if (manual) return;
    for (let i = 0; i < 10; i++) {
      const at = Date.now();
      const r = state.record;
      const deadlines = r ? [r.expires, ...(r.status === 'in_progress' ? [r.lease] : [])] : [];
      const near = deadlines.find((d) => at > d.lo - 150 && at < d.hi + 30);
      if (!near) return;
      await sleep(near.hi + 30 - at + 1);
    }
    fail('could not settle', { log });
  }

  /** The contract's answer to an acquire by `owner` at `at`. */
  function expectAcquire(state: KeyState, owner: string, at: number): Expected {
    const r = live(state, at);
    if (r?.status === 'in_progress' && r.owner === owner) {
      return {
        kind: 'acquired',
        origin: r.origin,
        takeover: false,
        fence: r.fence,
        redelivery: true,
        was: r,
      };
    }
    if (r && (r.status === 'completed' || !passed(r.lease, at))) return { kind: 'found' };
    return {
      kind: 'acquired',
      origin: r ? r.origin : owner,
      takeover: r?.status === 'in_progress',
      fence: r ? r.fence + 1 : undefined,
      redelivery: false,
      was: r,
    };
  }

  function matches(expected: Expected, result: AcquireResult, state: KeyState): string | undefined {
    if (expected.kind === 'found')
      return result.kind === 'found' ? undefined : `acquired, expected found`;
    if (result.kind !== 'acquired') return `found, expected acquired`;
    if (result.origin !== expected.origin)
      return `origin ${result.origin}, expected ${expected.origin}`;
    if (result.takeover !== expected.takeover)
      return `takeover ${result.takeover}, expected ${expected.takeover}`;
    if (expected.fence !== undefined && result.fence !== expected.fence)
      return `fence ${result.fence}, expected ${expected.fence}`;
    if (expected.fence === undefined && result.fence <= state.maxFence)
      return `fence ${result.fence} not above ${state.maxFence}`;
    return undefined;
  }

  function applyAcquire(
    state: KeyState,
    owner: string,
    expected: Expected,
    result: AcquireResult,
  ): void {
    if (expected.kind === 'found' || result.kind !== 'acquired') return;
    tally.acquisitions++;
    if (expected.redelivery || expected.was) tally.carried++;
    else tally.begun++;
    const lease = exact(result.leaseUntil);
    const expires = exact(result.leaseUntil + retentionMs);
    state.maxFence = Math.max(state.maxFence, result.fence);
    if (!state.owners.includes(owner)) state.owners.push(owner);
    state.record = {
      status: 'in_progress',
      owner,
      origin: result.origin,
      fence: result.fence,
      lease,
      expires: expected.redelivery && expected.was ? later(expected.was.expires, expires) : expires,
    };
  }

  const pick = (state: KeyState, who: Who): string | undefined => {
    if (who === 'new') return token();
    const current = state.record?.owner;
    if (who === 'current') return current ?? state.owners[state.owners.length - 1];
    const stale = state.owners.filter((o) => o !== current);
    return stale[stale.length - 1];
  };

  for (const step of ops) {
    await step1(step);
    await target.afterStep?.(keys.map((k) => k.key));
  }

  async function step1(step: OriginOp): Promise<void> {
    tally.steps++;
    log.push(JSON.stringify(step));
    if (step.op === 'advance') {
      const state = keys[step.key] as KeyState;
      if (manual) {
        const r = state.record;
        if (step.to === 'lease') manual.advance(leaseMs);
        else if (step.to === 'retention') manual.advance(leaseMs + retentionMs);
        else if (r) {
          // Exactly onto the key's next deadline (or 1 ms before): the boundary.
          const at = now();
          const next = [r.lease.hi, r.expires.hi].filter((d) => d > at).sort((a, b) => a - b)[0];
          if (next !== undefined) {
            manual.advance(next - at - (step.to === 'edgeMinus1' ? 1 : 0));
            tally.edges++;
          }
        }
      } else if (step.to === 'lease') await sleep(leaseMs + 60);
      else await sleep(leaseMs + retentionMs + 60);
      return;
    }
    const state = keys[step.key] as KeyState;
    const { key } = state;
    await settle(state);
    const at = now();

    if (step.op === 'acquire') {
      const owner = pick(state, step.who);
      if (owner === undefined) return;
      const expected = expectAcquire(state, owner, at);
      const result = await store.acquire({
        key,
        fingerprint: 'fp',
        owner,
        leaseMs,
        retentionMs,
      });
      const wrong = matches(expected, result, state);
      if (wrong) fail(`acquire (${step.who}) ${wrong}`, { result, expected, log });
      applyAcquire(state, owner, expected, result);
    } else if (step.op === 'race') {
      tally.races++;
      const owners = Array.from({ length: step.fresh }, token);
      const current = state.record?.status === 'in_progress' ? state.record.owner : undefined;
      if (step.withCurrent && current) owners.push(current);
      const results = await Promise.all(
        owners.map((owner) =>
          store.acquire({ key, fingerprint: 'fp', owner, leaseMs, retentionMs }),
        ),
      );
      // Some serial order must give exactly these answers.
      const before = { record: state.record, owners: [...state.owners], maxFence: state.maxFence };
      let explained = false;
      for (const order of permutations(owners.map((_, i) => i))) {
        state.record = before.record;
        state.owners = [...before.owners];
        state.maxFence = before.maxFence;
        let ok = true;
        for (const i of order) {
          const owner = owners[i] as string;
          const result = results[i] as AcquireResult;
          const expected = expectAcquire(state, owner, at);
          if (matches(expected, result, state)) {
            ok = false;
            break;
          }
          applyAcquire(state, owner, expected, result);
        }
        if (ok) {
          explained = true;
          break;
        }
      }
      // (A serial order lets at most one fresh owner acquire: the lease it takes is live.)
      if (!explained) fail('race: no serial order explains the answers', { results, log });
    } else if (step.op === 'release' || step.op === 'complete') {
      const owner = pick(state, step.who);
      if (owner === undefined) return;
      const r = live(state, at);
      const before = Date.now();
      const result =
        step.op === 'release'
          ? await store.release({ key, owner, retentionMs })
          : await store.complete({
              key,
              owner,
              outcome: new TextEncoder().encode(owner),
              retentionMs,
            });
      const after = manual ? before : Date.now();
      const base = manual ? at : undefined;
      const expires = base !== undefined ? exact(base + retentionMs) : undefined;
      const window = expires ?? { lo: before + retentionMs, hi: after + retentionMs };
      const mine = r?.owner === owner;
      if (r?.status === 'in_progress' && mine) {
        if (!result.ok) fail(`${step.op} by the owner refused`, { result, log });
        state.record =
          step.op === 'release'
            ? { ...r, status: 'released', lease: exact(at), expires: window }
            : { ...r, status: 'completed', expires: window, outcome: owner };
      } else if (
        (step.op === 'release' && r?.status === 'released' && mine) ||
        (step.op === 'complete' && r?.status === 'completed' && mine && r.outcome === owner)
      ) {
        // A redelivery: ok (release: SHOULD), nothing changes.
        if (step.op === 'complete' && !result.ok)
          fail('redelivered complete refused', { result, log });
      } else if (result.ok) fail(`${step.op} by a non-owner accepted`, { result, r, log });
    } else if (step.op === 'force') {
      const r = live(state, at);
      const result = await admin.forceRelease(key);
      if (r?.status === 'in_progress') {
        if (!result.ok || result.fence !== r.fence + 1)
          fail('forceRelease of an in-progress record', { result, log });
        state.maxFence = Math.max(state.maxFence, result.fence);
        state.record = {
          ...r,
          status: 'released',
          owner: undefined,
          fence: result.fence,
          lease: exact(at),
        };
      } else if (result.ok) fail('forceRelease of no in-progress record accepted', { result, log });
    } else if (step.op === 'delete') {
      const r = live(state, at);
      const result = await admin.delete(key);
      if (result.deleted !== (r !== undefined)) fail('delete', { result, r, log });
      state.record = undefined;
    } else if (step.op === 'get') {
      const r = live(state, at);
      const got: StoredRecord | undefined = await store.get(key);
      if (!r) {
        if (got) fail('get found a record the model does not hold', { got, log });
        return;
      }
      if (!got) fail('get found no record', { r, log });
      if (got.status !== r.status || (r.owner !== undefined && got.owner !== r.owner))
        fail('get: another record', { got, r, log });
      if ((got.origin ?? got.owner) !== r.origin)
        fail(`get: origin ${got.origin ?? got.owner}, expected ${r.origin}`, { got, r, log });
    }
  }
}

function* permutations(items: number[]): Generator<number[]> {
  if (items.length <= 1) {
    yield items;
    return;
  }
  for (let i = 0; i < items.length; i++) {
    const rest = [...items.slice(0, i), ...items.slice(i + 1)];
    for (const tail of permutations(rest)) yield [items[i] as number, ...tail];
  }
}

/** Runs `numRuns` sequences, each on a target `make` gives; answers what they saw. */
export async function checkOriginModel(
  make: () => OriginTarget | Promise<OriginTarget>,
  options: { clock: 'manual' | 'server'; keys?: number; numRuns: number },
): Promise<OriginTally> {
  const tally = newTally();
  await fc.assert(
    fc.asyncProperty(originOps(options.clock, options.keys), async (ops) =>
      runOriginModel(await make(), ops, tally),
    ),
    { numRuns: options.numRuns, endOnFailure: true },
  );
  return tally;
}

/** A target on a store with a server clock: 400 ms leases, 900 ms retention. */
export const serverOriginTarget = (
  store: IdempotencyStore,
  newKeys: (count: number) => string[],
): OriginTarget => ({ store, clock: { kind: 'server' }, leaseMs: 400, retentionMs: 900, newKeys });
