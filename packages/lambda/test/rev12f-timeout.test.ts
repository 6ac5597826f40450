import { InvalidInputError } from '@idem/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { functionScope, idempotency, idempotentTimeoutResponse } from '../src/index.js';
import { type Env, fakeContext, openEnv } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// rev12f: the timeout mark of idempotentTimeoutResponse() (per running invocation, until the
// next macrotask) under CONCURRENT invocations of one handler instance (Lambda Managed
// Instances multi-concurrency, or any server running Middy handlers concurrently).

type Ev = { id: string };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// A's timeout: Middy arms it when it calls the handler, `remaining - timeoutEarlyInMillis`,
// so 150 ms after the invocation started (or at once if the acquire took longer), as with a
// 300 ms context and 150 ms early. The context has 3 s though: @idem/lambda bounds the acquire
// by half the time left (a 300 ms context gave it 150 ms, and a loaded machine's Redis round
// trip took longer: A's invocation failed STORE_UNAVAILABLE instead of timing out).
const A_CONTEXT_MS = 3_000;
const TIMEOUT_EARLY_MS = A_CONTEXT_MS - 150;

describeMiddy('rev12f: timeout marks across concurrent invocations (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  // FIXED (was FINDING HIGH): a timeout answer is an object known by identity; `undefined` is
  // refused (InvalidInputError: A's invocation rejects with it, A's key is released).
  // Was: Middy 6 hands every concurrent invocation the SAME AbortSignal (a shared
  // `handlerAbort`, "because it's slow") and aborts it when ONE invocation's timeoutEarly
  // fires, then calls timeoutEarlyResponse. A handler B that stops on abort and returns
  // `undefined` (an SQS handler: "stop, done") resolves in the microtasks right after, while
  // A's timeout mark (`undefined`, from idempotentTimeoutResponse(() => undefined)) is set for
  // every running invocation, B included. B's Middy write of its own `undefined` return is
  // taken as B's timeout: B's key is RELEASED although B's handler returned; Middy alone
  // answered B's caller `undefined` (success): the retry of B runs B's handler a second time.
  // Fix: mark the timeout answer for the timed-out invocation only (e.g. wrap per request: the
  // wrapper cannot know it, so compare the write with Middy's race instead: have `before`
  // install a per-request marker that the wrapped factory reads through a request-scoped
  // AsyncLocalStorage store entered in `before`), or never take an `undefined` / shared
  // primitive answer as a timeout once another running invocation could return it (refuse
  // such answers in idempotentTimeoutResponse with InvalidInputError).
  it("A's timeout (answer undefined) aborts B via Middy's shared signal; B returns undefined: B is recorded, not run twice", async () => {
    const runs: Record<string, number> = {};
    const handler = middy(
      async (e: Ev, _ctx: unknown, opts?: { signal: AbortSignal }) => {
        runs[e.id] = (runs[e.id] ?? 0) + 1;
        if (e.id.startsWith('A')) {
          await sleep(400);
          return undefined;
        }
        if ((runs[e.id] ?? 0) > 1) return undefined;
        // B: waits for its work, stops when aborted (the signal Middy passes it).
        await new Promise<void>((resolve) => {
          opts?.signal.addEventListener('abort', () => resolve(), { once: true });
          setTimeout(resolve, 2_000);
        });
        return undefined;
      },
      {
        timeoutEarlyInMillis: TIMEOUT_EARLY_MS,
        timeoutEarlyResponse: idempotentTimeoutResponse(() => undefined),
      },
    ).use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }));
    const a = handler({ id: 'A1' }, fakeContext(A_CONTEXT_MS));
    const b = handler({ id: 'B1' }, fakeContext(10_000));
    await expect(a).rejects.toBeInstanceOf(InvalidInputError);
    expect(await b).toBeUndefined();
    await sleep(50);
    // B's caller got a success: its retry must replay it, not run B again.
    expect(await handler({ id: 'B1' }, fakeContext(10_000))).toBeUndefined();
    expect(runs.B1).toBe(1);
  });

  // Same with a shared constant object answer (`GATEWAY_TIMEOUT`, returned by B when its own
  // downstream call is aborted): B's 504 is a final answer of B, taken for A's timeout.
  // FIXED (was FINDING MEDIUM): the answer is taken by the first request Middy writes it to (A).
  // Was: as above with an object answer shared by the timeout factory and the
  // handler: B's returned constant is released instead of recorded; the retry runs B again.
  // Fix: as above (mark the timed-out invocation only).
  it("a shared constant timeout answer returned by B in the tick of A's timeout: B recorded", async () => {
    const GATEWAY_TIMEOUT = { statusCode: 504 };
    const runs: Record<string, number> = {};
    const handler = middy(
      async (e: Ev, _ctx: unknown, opts?: { signal: AbortSignal }) => {
        runs[e.id] = (runs[e.id] ?? 0) + 1;
        if (e.id.startsWith('A')) {
          await sleep(400);
          return { statusCode: 200 };
        }
        if ((runs[e.id] ?? 0) > 1) return { statusCode: 200 };
        await new Promise<void>((resolve) => {
          opts?.signal.addEventListener('abort', () => resolve(), { once: true });
          setTimeout(resolve, 2_000);
        });
        return GATEWAY_TIMEOUT; // B's downstream call was aborted: B's final answer
      },
      {
        timeoutEarlyInMillis: TIMEOUT_EARLY_MS,
        timeoutEarlyResponse: idempotentTimeoutResponse(() => GATEWAY_TIMEOUT),
      },
    ).use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }));
    const a = handler({ id: 'A2' }, fakeContext(A_CONTEXT_MS));
    const b = handler({ id: 'B2' }, fakeContext(10_000));
    expect(await a).toBe(GATEWAY_TIMEOUT);
    expect(await b).toBe(GATEWAY_TIMEOUT);
    await sleep(50);
    expect(await handler({ id: 'B2' }, fakeContext(10_000))).toEqual(GATEWAY_TIMEOUT);
    expect(runs.B2).toBe(1);
  });

  // Changed by rev12f decision 1: an `undefined` timeout answer is refused (InvalidInputError).
  it("held: B returns undefined one macrotask after A's refused undefined timeout answer: B recorded", async () => {
    const runs: Record<string, number> = {};
    const handler = middy(
      async (e: Ev) => {
        runs[e.id] = (runs[e.id] ?? 0) + 1;
        if (e.id.startsWith('A')) await sleep(400);
        else if ((runs[e.id] ?? 0) === 1) await sleep(200); // well after A's timeout at ~150 ms
        return undefined;
      },
      {
        timeoutEarlyInMillis: TIMEOUT_EARLY_MS,
        timeoutEarlyResponse: idempotentTimeoutResponse(() => undefined),
      },
    ).use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }));
    const a = handler({ id: 'A3' }, fakeContext(A_CONTEXT_MS));
    const b = handler({ id: 'B3' }, fakeContext(10_000));
    await expect(a).rejects.toBeInstanceOf(InvalidInputError);
    expect(await b).toBeUndefined();
    expect(await handler({ id: 'B3' }, fakeContext(10_000))).toBeUndefined();
    expect(runs.B3).toBe(1);
    await sleep(300);
    // A timed out: released, its retry runs.
    expect(await handler({ id: 'A3' }, fakeContext(10_000))).toBeUndefined();
    expect(runs.A3).toBe(2);
  });
});
