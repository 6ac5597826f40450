/**
 * originrev: the exactly-once property of the conformance suite (src/properties.ts) seen by
 * an application that names its effect by `originId`, as llm-api names its bills: concurrent
 * logical requests on one or two keys, attempts that fail before or after their effect, crash
 * (no complete, no release: the lease passes and a retry takes over) or stall past their lease
 * (a retry takes over while they still run), store calls that fail, lose their answer, or
 * are delivered twice, all ordered by fast-check's scheduler; then faults stop and every
 * request retries to its answer. The retention (1 h) never passes within a scenario, so:
 *
 * - (O1) every execution of one key sees one and the same `originId`;
 * - (O2) a ledger keyed by `originId` and fenced holds, for each key, the execution whose
 *   outcome was recorded (the app-level effect happened once, under one name).
 *
 * Used by the originrev-engine-*.test.ts files of the store packages.
 */
import { randomBytes } from 'node:crypto';
import {
  type Clock,
  createIdempotency,
  decodeOutcome,
  deriveStorageKey,
  type IdempotencyStore,
  isIdemError,
  systemClock,
} from '@idem/core';
import fc from 'fast-check';
import { type Fault, FencedLedger, ObservedStore } from '../src/index.js';

type Behaviour = 'ok' | 'fail_before' | 'fail_after' | 'crash' | 'stall';

export interface EngineScenario {
  requests: { keyIndex: number; attempts: Behaviour[] }[];
  faults: Fault[];
}

export const engineScenarios: fc.Arbitrary<EngineScenario> = fc.record({
  requests: fc.array(
    fc.record({
      keyIndex: fc.integer({ min: 0, max: 1 }),
      attempts: fc.array(
        fc.constantFrom<Behaviour>('ok', 'ok', 'fail_before', 'fail_after', 'crash', 'stall'),
        { minLength: 1, maxLength: 3 },
      ),
    }),
    { minLength: 1, maxLength: 5 },
  ),
  faults: fc.array(fc.constantFrom<Fault>('none', 'none', 'none', 'fail', 'lost', 'redeliver'), {
    maxLength: 20,
  }),
});

export interface EngineTarget {
  store: IdempotencyStore;
  clock: Clock;
  /** Lets time pass (a manual clock, or a real sleep). */
  advance(ms: number): Promise<void>;
  leaseMs: number;
  toleranceMs: number;
}

export interface EngineTally {
  scenarios: number;
  executions: number;
  takeoversSeen: number;
  keysChecked: number;
}

export const newEngineTally = (): EngineTally => ({
  scenarios: 0,
  executions: 0,
  takeoversSeen: 0,
  keysChecked: 0,
});

class OperationFailure extends Error {}
const never = new Promise<never>(() => {});

/** Runs one scenario; answers the broken invariants (empty when all hold). */
export async function runEngineScenario(
  target: EngineTarget,
  s: fc.Scheduler,
  scenario: EngineScenario,
  tally: EngineTally,
): Promise<string[]> {
  tally.scenarios++;
  const { leaseMs, toleranceMs } = target;
  const observed = new ObservedStore(
    target.store,
    target.clock,
    scenario.faults,
    toleranceMs,
    (value, label) => s.schedule(Promise.resolve(value), label),
  );
  const idem = createIdempotency<{ execution: string }>({
    store: observed,
    clock: target.clock,
    leaseMs,
    heartbeatMs: false,
    retentionMs: 3_600_000,
  });
  const scope = `scope-${randomBytes(4).toString('hex')}`;
  const ledger = new FencedLedger();
  const seen = new Map<string, Set<string>>();
  const fences = new Map<string, number[]>();
  let executions = 0;

  async function attempt(keyIndex: number, behave: Behaviour): Promise<'done' | 'retry'> {
    let crashed!: () => void;
    const crash = new Promise<'retry'>((resolve) => {
      crashed = () => resolve('retry');
    });
    const run = idem.execute({ key: `key-${keyIndex}`, scope }, async (ctx) => {
      const execution = `exec-${++executions}`;
      tally.executions++;
      const ids = seen.get(ctx.storageKey) ?? new Set<string>();
      ids.add(ctx.originId);
      seen.set(ctx.storageKey, ids);
      fences.set(ctx.storageKey, [...(fences.get(ctx.storageKey) ?? []), ctx.fence]);
      if (behave === 'fail_before') throw new OperationFailure(`${execution} failed`);
      if (behave === 'stall') {
        await target.advance(leaseMs + toleranceMs + 5);
        await observed.gate?.(undefined, 'stall');
      }
      // The effect, named by the logical request and fenced.
      ledger.write(ctx.originId, ctx.fence, execution);
      if (behave === 'fail_after') throw new OperationFailure(`${execution} failed after`);
      if (behave === 'crash') {
        crashed();
        return never;
      }
      return { execution };
    });
    return Promise.race([
      run.then(
        () => 'done' as const,
        (error: unknown) => {
          if (error instanceof OperationFailure || isIdemError(error)) return 'retry' as const;
          throw error;
        },
      ),
      crash,
    ]);
  }

  const done = scenario.requests.map(() => false);
  await s.waitFor(
    Promise.all(
      scenario.requests.map(async (req, i) => {
        for (const behave of req.attempts) {
          if ((await attempt(req.keyIndex, behave)) === 'done') {
            done[i] = true;
            return;
          }
        }
      }),
    ),
  );
  observed.faultsOn = false;
  observed.gate = undefined;
  await s.waitAll();
  await idem.drain(10_000);
  if (done.includes(false)) await target.advance(leaseMs + toleranceMs + 5);
  for (const [i, req] of scenario.requests.entries()) {
    for (let tries = 0; !done[i] && tries < 6; tries++) {
      if ((await attempt(req.keyIndex, 'ok')) === 'done') done[i] = true;
      else await target.advance(leaseMs + toleranceMs + 5);
    }
  }

  const problems: string[] = [];
  if (done.includes(false)) problems.push('a request got no answer after faults stopped');
  for (const keyIndex of new Set(scenario.requests.map((r) => r.keyIndex))) {
    const storageKey = deriveStorageKey(scope, `key-${keyIndex}`);
    tally.keysChecked++;
    const ids = seen.get(storageKey) ?? new Set();
    const keyFences = fences.get(storageKey) ?? [];
    if (keyFences.some((f) => f > 1)) tally.takeoversSeen++;
    if (ids.size !== 1)
      problems.push(
        `(O1) key-${keyIndex}: ${ids.size} originIds over executions with fences ${keyFences.join(',')}`,
      );
    const completion = observed.completions.get(storageKey);
    if (!completion) {
      problems.push(`key-${keyIndex}: nothing recorded`);
      continue;
    }
    const stored = decodeOutcome(completion.outcome);
    if (stored.meta.kind !== 'value') continue;
    const value = JSON.parse(new TextDecoder().decode(stored.body)) as { execution: string };
    const [originId] = [...ids];
    const slot = originId === undefined ? undefined : ledger.slots.get(originId);
    if (slot?.execution !== value.execution)
      problems.push(
        `(O2) key-${keyIndex}: the ledger under its originId holds ${slot?.execution}, ${value.execution} was recorded`,
      );
  }
  return problems;
}

/** The property: no broken invariant. */
export function originEngineProperty(make: () => Promise<EngineTarget>, tally: EngineTally) {
  return fc.asyncProperty(fc.scheduler(), engineScenarios, async (s, scenario) => {
    const problems = await runEngineScenario(await make(), s, scenario, tally);
    if (problems.length > 0)
      throw new Error(
        `Invariants broken:\n- ${problems.join('\n- ')}\nSchedule:\n${s
          .report()
          .map((r) => r.label)
          .join(' > ')}`,
      );
  });
}

/** Runs `numRuns` scenarios, each on a target `make` gives; answers what they saw. */
export async function checkOriginEngine(
  make: () => Promise<EngineTarget>,
  numRuns: number,
): Promise<EngineTally> {
  const tally = newEngineTally();
  await fc.assert(originEngineProperty(make, tally), { numRuns, endOnFailure: true });
  return tally;
}

/** A target on a store with a server clock: 250 ms leases, real sleeps. */
export const serverEngineTarget = (store: IdempotencyStore): EngineTarget => ({
  store,
  clock: systemClock,
  advance: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  leaseMs: 250,
  toleranceMs: 50,
});
