import { randomBytes } from 'node:crypto';
import {
  createIdempotency,
  decodeOutcome,
  deriveStorageKey,
  everythingFinal,
  type IdemError,
  isIdemError,
  successOnly,
} from '@idem/core';
import fc from 'fast-check';
import { createHarness } from './harness.js';
import { type Fault, FencedLedger, ObservedStore } from './observed-store.js';
import type { ConformanceOptions } from './options.js';

/** What an operation attempt does. */
type Behaviour = 'ok' | 'fail_before' | 'fail_after' | 'crash' | 'stall' | 'stall_fail';

interface LogicalRequest {
  keyIndex: number;
  /** 0 is the key's usual payload; 1 is a client reusing the key for another request. */
  payload: number;
  attempts: Behaviour[];
}

interface Scenario {
  requests: LogicalRequest[];
  faults: Fault[];
  stripePolicy: boolean;
}

/** What a logical request ended with. */
type Answer =
  | { kind: 'value'; value: OpValue; replayed: boolean }
  | { kind: 'failure'; message: string; replayed: boolean }
  | { kind: 'mismatch' };

interface OpValue {
  execution: string;
  fence: number;
  payload: number;
}

const behaviour = fc.constantFrom<Behaviour>(
  'ok',
  'ok',
  'ok',
  'fail_before',
  'fail_after',
  'crash',
  'stall',
  'stall_fail',
);
const fault = fc.constantFrom<Fault>(
  'none',
  'none',
  'none',
  'none',
  'none',
  'none',
  'fail',
  'lost',
  'redeliver',
);

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  requests: fc.array(
    fc.record({
      keyIndex: fc.integer({ min: 0, max: 1 }),
      payload: fc.constantFrom(0, 0, 0, 1),
      attempts: fc.array(behaviour, { minLength: 1, maxLength: 3 }),
    }),
    { minLength: 1, maxLength: 6 },
  ),
  faults: fc.array(fault, { maxLength: 24 }),
  stripePolicy: fc.boolean(),
});

class OperationFailure extends Error {}

const never = new Promise<never>(() => {});

/**
 * Runs one scenario: concurrent logical requests with retries against the store, under
 * injected store faults, operation failures, crashes and lease expiry, ordered by the
 * scheduler; then faults stop and every request retries to a final answer. Returns the
 * list of broken invariants (empty when all hold).
 */
export async function runScenario(
  options: ConformanceOptions,
  s: fc.Scheduler,
  scenario: Scenario,
): Promise<string[]> {
  const h = await createHarness(options);
  const { time } = h;
  const observed = new ObservedStore(
    h.store,
    time.clock,
    scenario.faults,
    time.toleranceMs,
    (value, label) => s.schedule(Promise.resolve(value), label),
  );
  const ledger = new FencedLedger();
  const idem = createIdempotency<OpValue>({
    store: observed,
    clock: time.clock,
    leaseMs: time.leaseMs,
    heartbeatMs: false,
    retentionMs: 3_600_000,
    isFinal: scenario.stripePolicy ? everythingFinal : successOnly,
  });
  const scope = `scope-${randomBytes(4).toString('hex')}`;
  const clientKey = (i: number) => `key-${i}`;
  let executions = 0;
  const originIds = new Map<string, Set<string>>();

  async function attempt(req: LogicalRequest, behave: Behaviour): Promise<Answer | 'retry'> {
    let crashed!: () => void;
    const crash = new Promise<'retry'>((resolve) => {
      crashed = () => resolve('retry');
    });
    const run = idem.execute(
      { key: clientKey(req.keyIndex), scope, fingerprint: `payload-${req.payload}` },
      async ({ fence, storageKey, originId }) => {
        const execution = `exec-${++executions}`;
        // (f): every execution of a key's one logical request (no record expires within a
        // scenario: the retention is an hour) names it by the same originId.
        const ids = originIds.get(storageKey) ?? new Set<string>();
        ids.add(originId);
        originIds.set(storageKey, ids);
        const value: OpValue = { execution, fence, payload: req.payload };
        if (behave === 'fail_before')
          throw new OperationFailure(`${execution} failed before its side effect`);
        if (behave === 'stall' || behave === 'stall_fail') {
          // A pause longer than the lease (GC, a slow upstream): others may take over.
          await time.advance(time.leaseMs + time.toleranceMs + 5);
          await observed.gate?.(undefined, 'stall');
        }
        ledger.write(storageKey, fence, execution);
        if (behave === 'fail_after')
          throw new OperationFailure(`${execution} failed after its side effect`);
        if (behave === 'crash') {
          crashed();
          return never; // the process died: no complete, no release
        }
        return value;
      },
    );
    const settled = await Promise.race([
      run.then(
        (r): Answer => ({ kind: 'value', value: r.value, replayed: r.replayed }),
        (error: unknown): Answer | 'retry' => classify(error, scenario.stripePolicy),
      ),
      crash,
    ]);
    return settled;
  }

  const answers: (Answer | undefined)[] = scenario.requests.map(() => undefined);
  async function client(index: number, req: LogicalRequest): Promise<void> {
    for (const behave of req.attempts) {
      const answer = await attempt(req, behave);
      if (answer !== 'retry') {
        answers[index] = answer;
        return;
      }
    }
  }

  try {
    await s.waitFor(Promise.all(scenario.requests.map((req, i) => client(i, req))));
    // Faults stop; time passes beyond every lease; each unanswered request retries.
    observed.faultsOn = false;
    observed.gate = undefined;
    // Calls still held by the scheduler go through now; final writes the executor retries
    // in the background (or acquisitions it gives back) then land.
    await s.waitAll();
    const pending = await idem.drain(10_000);
    if (pending > 0)
      observed.violations.push(`(e) ${pending} background final writes never settled`);
    if (answers.includes(undefined)) await time.advance(time.leaseMs + time.toleranceMs + 5);
    for (const [i, req] of scenario.requests.entries()) {
      for (let tries = 0; answers[i] === undefined && tries < 6; tries++) {
        const answer = await attempt(req, 'ok');
        if (answer !== 'retry') answers[i] = answer;
        else await time.advance(time.leaseMs + time.toleranceMs + 5);
      }
    }
    return await verify();
  } finally {
    await h.dispose();
  }

  async function verify(): Promise<string[]> {
    const problems = [...observed.violations, ...observed.leaseViolations()];
    for (const [i, req] of scenario.requests.entries()) {
      const answer = answers[i];
      const storageKey = deriveStorageKey(scope, clientKey(req.keyIndex));
      const completion = observed.completions.get(storageKey);
      if (!answer) {
        problems.push(`(e) request ${i} got no final answer after faults stopped`);
        continue;
      }
      // MISMATCH is final: it answers a request that reused a key another payload held.
      if (answer.kind === 'mismatch') continue;
      if (!completion) {
        problems.push(
          `(b) request ${i} got a final ${answer.kind} but nothing was recorded for its key`,
        );
        continue;
      }
      const stored = decodeOutcome(completion.outcome);
      if (answer.kind === 'value') {
        const value =
          stored.meta.kind === 'value'
            ? JSON.parse(new TextDecoder().decode(stored.body))
            : stored.meta;
        if (JSON.stringify(value) !== JSON.stringify(answer.value)) {
          problems.push(
            `(b) request ${i} answered ${JSON.stringify(answer.value)} but the first final outcome is ${JSON.stringify(value)}`,
          );
        }
      } else {
        const failure = stored.meta.failure as { message?: string } | undefined;
        if (stored.meta.kind !== 'failure' || failure?.message !== answer.message) {
          problems.push(
            `(b) request ${i} got failure "${answer.message}" but the first final outcome differs`,
          );
        }
      }
    }
    const owners = new Map<string, string>();
    for (const [storageKey, ids] of originIds) {
      if (ids.size > 1)
        problems.push(
          `(f) the executions of one logical request got ${ids.size} originIds: ${[...ids].join(', ')}`,
        );
      for (const id of ids) {
        const other = owners.get(id);
        if (other !== undefined && other !== storageKey)
          problems.push(`(f) two storage keys share the originId ${id}`);
        owners.set(id, storageKey);
      }
    }
    for (const [storageKey, completion] of observed.completions) {
      const record = await h.raw(storageKey);
      if (record?.status !== 'completed' || record.owner !== completion.owner) {
        problems.push(
          `(c) the record of a completed key was overwritten: ${JSON.stringify(record && { ...record, outcome: undefined })}`,
        );
      } else if (
        !record.outcome ||
        Buffer.compare(Buffer.from(record.outcome), Buffer.from(completion.outcome)) !== 0
      ) {
        problems.push('(b) the stored outcome bytes differ from the first final outcome');
      }
      const stored = decodeOutcome(completion.outcome);
      if (stored.meta.kind === 'value') {
        const value = JSON.parse(new TextDecoder().decode(stored.body)) as OpValue;
        const slot = ledger.slots.get(storageKey);
        if (slot?.execution !== value.execution) {
          problems.push(
            `(d) the fenced ledger holds ${slot?.execution} but ${value.execution} was recorded`,
          );
        }
      }
    }
    return problems;
  }
}

function classify(error: unknown, stripe: boolean): Answer | 'retry' {
  if (isIdemError(error, 'MISMATCH')) return { kind: 'mismatch' };
  if (isIdemError(error, 'REPLAYED_FAILURE')) {
    return {
      kind: 'failure',
      message: (error as IdemError & { stored: { message: string } }).stored.message,
      replayed: true,
    };
  }
  if (error instanceof OperationFailure)
    return stripe ? { kind: 'failure', message: error.message, replayed: false } : 'retry';
  if (isIdemError(error)) return 'retry'; // IN_PROGRESS, STORE_UNAVAILABLE, LEASE_LOST
  throw error;
}

/** The fast-check property behind (a)–(f). */
export function exactlyOnceProperty(options: ConformanceOptions) {
  return fc.asyncProperty(fc.scheduler(), scenarioArb, async (s, scenario) => {
    const problems = await runScenario(options, s, scenario);
    if (problems.length > 0)
      throw new Error(
        `Invariants broken:\n- ${problems.join('\n- ')}\nSchedule:\n${s
          .report()
          .map((r) => r.label)
          .join(' > ')}`,
      );
  });
}

/** Runs of each property: `IDEM_PROPERTY_RUNS` if set, else the option, else 200 in CI and 25 locally. */
export function resolveNumRuns(options: ConformanceOptions): number {
  const fromEnv = Number(process.env.IDEM_PROPERTY_RUNS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  if (options.numRuns !== undefined) return options.numRuns;
  return process.env.CI ? 200 : 25;
}
