import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { callStore, StoreUnavailableError } from '../src/index.js';
import {
  answersSynchronously,
  copiesInputOf,
  latin1FormOf,
  SYNC_FORM,
  syncFormOf,
  viewFormOf,
} from '../src/store-call.js';

const never = () => new Promise<never>(() => {});
const resolveAfter = <T>(ms: number, value: T) =>
  new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));

describe('callStore time limits (one shared timer per limit length)', () => {
  it('times out every call that does not answer, each after its own limit, and only those', async () => {
    const started = performance.now();
    const first = callStore('acquire', 150, never);
    // Its handler is attached at once: it rejects before the later calls start.
    const firstAt = first.then(
      () => Number.NaN,
      (error: unknown) => {
        expect(error).toBeInstanceOf(StoreUnavailableError);
        expect((error as Error).message).toBe('Store acquire timed out after 150 ms');
        return performance.now() - started;
      },
    );
    // The later calls start 300 ms after the first: a limit counted from a later call would
    // put the first's timeout at 450 ms or more, well apart from its own 150 even when a
    // loaded machine fires timers 50-100 ms late (60 ms apart, one CI run missed the bound).
    await resolveAfter(300, null);
    const answered = callStore('acquire', 150, () => resolveAfter(20, 'answered'));
    const second = callStore('acquire', 150, never);
    const late = callStore('complete', 150, () => resolveAfter(400, 'too late'));
    const secondAt = second.then(
      () => Number.NaN,
      () => performance.now() - started,
    );
    await expect(answered).resolves.toBe('answered');
    await expect(late).rejects.toThrow('Store complete timed out after 150 ms');
    // Each limit counts from its own call (timers may fire a little late, never early).
    expect(await firstAt).toBeGreaterThanOrEqual(148);
    expect(await firstAt).toBeLessThan(300 + 100);
    expect(await secondAt).toBeGreaterThanOrEqual(300 + 148);
  });

  it('a call is never timed out by the timer of an earlier call that answered', async () => {
    // The shared timer is armed for the first call; it answers, and a later call becomes the
    // oldest pending one: when the timer fires at the first call's deadline, the later call
    // is not due yet.
    await callStore('acquire', 300, () => resolveAfter(5, 'first'));
    await resolveAfter(150, null);
    const started = performance.now();
    const rejectedAfter = await callStore('acquire', 300, never).then(
      () => Number.NaN,
      () => performance.now() - started,
    );
    expect(rejectedAfter).toBeGreaterThanOrEqual(298);
  });

  it('limits of different lengths do not wait for each other', async () => {
    const long = callStore('acquire', 5_000, never).catch((error: unknown) => error);
    const started = performance.now();
    await expect(callStore('extend', 50, never)).rejects.toThrow('timed out after 50 ms');
    expect(performance.now() - started).toBeLessThan(1_000);
    void long;
  });

  it('a failing call rejects as STORE_UNAVAILABLE with its cause, before its limit', async () => {
    const cause = new Error('connection reset');
    const error = await callStore('release', 10_000, () => Promise.reject(cause)).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as StoreUnavailableError).cause).toBe(cause);
  });

  // The process-level behaviour of the shared timer, as a timer per call had it: a pending
  // call keeps the process alive until its limit unless it is background work (unref), and
  // an answered call leaves nothing that keeps it alive.
  // The child runs the built package (the tests run after `pnpm build`).
  const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
  const run = (body: string) => {
    if (!existsSync(dist)) throw new Error(`${dist} is missing: run pnpm build first`);
    const started = performance.now();
    const child = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `import { callStore } from ${JSON.stringify(dist)};\n${body}`],
      { encoding: 'utf8', timeout: 20_000 },
    );
    return { ms: performance.now() - started, out: child.stdout + child.stderr };
  };

  it('keeps the process alive for a pending call until its limit; not for background work or answered calls', () => {
    const pending = run(
      "callStore('acquire', 1500, () => new Promise(() => {})).catch((e) => console.log('rejected', e.message));",
    );
    expect(pending.out).toContain('rejected Store acquire timed out after 1500 ms');
    expect(pending.ms).toBeGreaterThanOrEqual(1_500);
    const background = run(
      "callStore('complete', 30000, () => new Promise(() => {}), { unref: true }); console.log('left');",
    );
    expect(background.out).toContain('left');
    const answered = run(
      "await callStore('acquire', 30000, async () => 1); console.log('answered');",
    );
    expect(answered.out).toContain('answered');
    // Neither waited for its 30 s limit (the child's start-up is most of this).
    expect(background.ms).toBeLessThan(15_000);
    expect(answered.ms).toBeLessThan(15_000);
  });
});

describe("engine-only synchronous forms (view, latin1) are out of every caller's reach", () => {
  const sync = (input: { key: string }) => `sync ${input.key}`;
  const view = (input: { key: string }) => `view ${input.key}`;
  const latin1 = (input: { key: string }) => `latin1 ${input.key}`;

  it('the engine reads what was declared; the method carries only its public synchronous form', () => {
    const method = answersSynchronously(sync, { view, latin1, copiesInput: true });
    expect(viewFormOf(method)).toBe(view);
    expect(latin1FormOf(method)).toBe(latin1);
    expect(copiesInputOf(method)).toBe(true);
    expect(syncFormOf(method)).toBe(sync);
    // Nothing but `length`, `name` and SYNC_FORM (which copies) on the method.
    const keys = Reflect.ownKeys(method);
    expect(keys.filter((key) => typeof key === 'symbol')).toEqual([SYNC_FORM]);
    for (const key of keys) {
      const value = Reflect.getOwnPropertyDescriptor(method, key)?.value;
      expect([view, latin1]).not.toContain(value);
      if (value !== null && typeof value === 'object') {
        expect(Object.values(value)).not.toContain(view);
      }
    }
    expect(
      (method as unknown as Record<symbol, unknown>)[Symbol.for('idem.store.syncFormOptions')],
    ).toBeUndefined();
  });

  it('a wrapper (a copy of its properties, a new method, its sync form replaced in place) declares nothing', () => {
    const method = answersSynchronously(sync, { view, latin1, copiesInput: true });
    const copy = Object.assign(async (input: { key: string }) => method(input), method);
    const spread = Object.defineProperties(
      async (input: { key: string }) => method(input),
      Object.getOwnPropertyDescriptors(method),
    );
    for (const wrapper of [copy, spread]) {
      expect(viewFormOf(wrapper)).toBeUndefined();
      expect(latin1FormOf(wrapper)).toBeUndefined();
      expect(copiesInputOf(wrapper)).toBe(false);
    }
    (method as unknown as Record<symbol, unknown>)[SYNC_FORM] = (input: { key: string }) =>
      `replaced ${input.key}`;
    expect(viewFormOf(method)).toBeUndefined();
    expect(latin1FormOf(method)).toBeUndefined();
    expect(copiesInputOf(method)).toBe(false);
  });
  it('SYNC_FORM counts only as an own property of a method answersSynchronously built: not through a Proxy, a prototype or a hand-made method', () => {
    const method = answersSynchronously(sync, { view, latin1, copiesInput: true });
    const proxied = new Proxy(method, { apply: (target, _this, args) => target(args[0]) });
    const inheriting = Object.setPrototypeOf(
      async (input: { key: string }) => method(input),
      method,
    ) as typeof method;
    const handMade = Object.assign(async (input: { key: string }) => method(input), {
      [SYNC_FORM]: sync,
    });
    const copied = Object.defineProperties(
      async (input: { key: string }) => method(input),
      Object.getOwnPropertyDescriptors(method),
    );
    for (const wrapper of [proxied, inheriting, handMade, copied]) {
      expect(syncFormOf(wrapper)).toBeUndefined();
      expect(viewFormOf(wrapper)).toBeUndefined();
      expect(latin1FormOf(wrapper)).toBeUndefined();
      expect(copiesInputOf(wrapper)).toBe(false);
    }
    // The built method's own form, replaced in place, is what counts; deleted, none.
    const replaced = (input: { key: string }) => `replaced ${input.key}`;
    (method as unknown as Record<symbol, unknown>)[SYNC_FORM] = replaced;
    expect(syncFormOf(method)).toBe(replaced);
    delete (method as unknown as Record<symbol, unknown>)[SYNC_FORM];
    Object.setPrototypeOf(
      method,
      Object.assign(Object.create(Function.prototype), { [SYNC_FORM]: sync }),
    );
    expect(syncFormOf(method)).toBeUndefined();
    expect(viewFormOf(method)).toBeUndefined();
  });

  it('replacing WeakMap.prototype.get / set or Function.prototype.call later hands no caller the declared forms', () => {
    const { get, set } = WeakMap.prototype;
    const { call } = Function.prototype;
    const seen = new Set<unknown>();
    WeakMap.prototype.get = function (this: WeakMap<object, unknown>, key: object) {
      seen.add(this);
      return Reflect.apply(get, this, [key]);
    };
    WeakMap.prototype.set = function (this: WeakMap<object, unknown>, key: object, value: unknown) {
      seen.add(this);
      return Reflect.apply(set, this, [key, value]);
    };
    Function.prototype.call = function (this: (...a: unknown[]) => unknown, ...args: unknown[]) {
      seen.add(args[0]);
      return Reflect.apply(this, args[0], args.slice(1));
    };
    let method: (input: { key: string }) => Promise<string>;
    let forms: unknown[];
    try {
      method = answersSynchronously(sync, { view, latin1, copiesInput: true });
      forms = [viewFormOf(method), latin1FormOf(method), syncFormOf(method)];
    } finally {
      Function.prototype.call = call;
      WeakMap.prototype.get = get;
      WeakMap.prototype.set = set;
    }
    expect(forms).toEqual([view, latin1, sync]);
    // No map the patches were handed holds what was declared for the method.
    for (const map of seen) {
      if (!(map instanceof WeakMap)) continue;
      const declared = Reflect.apply(get, map, [method]) as { view?: unknown } | undefined;
      expect(declared?.view).toBeUndefined();
    }
  });
});
