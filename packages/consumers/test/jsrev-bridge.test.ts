import { setTimeout as sleep } from 'node:timers/promises';
import {
  createIdempotency,
  fingerprint,
  type IdempotencyStore,
  InvalidInputError,
  StoreUnavailableError,
} from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { AckPolicy, type JsMsg, type NatsConnection } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeJetStream, type MessageReport } from '../src/index.js';
import { LEGACY_CLOCK_SLACK_MS } from '../src/message-outcome.js';
import { connectNats, uniqueName } from './brokers.js';

// Adversarial review of c9fc566 (the JetStream key upgrade bridge, `legacyKeyLookup`): real
// NATS JetStream and real Redis. An "old instance" is what the earlier version did with a
// delivery: the engine keyed `stream:streamSequence` in the consumer's scope.
describe('jsrev: JetStream legacy key bridge attacks', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('idem-jsrev')}:`;
  const store = createRedisStore({ client: redis, keyPrefix: prefix });
  let nc: NatsConnection | undefined;
  const streams: string[] = [];
  afterAll(async () => {
    if (nc) {
      const jsm = await nc.jetstreamManager();
      for (const stream of streams) await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
    }
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  const encode = (s: string) => new TextEncoder().encode(s);
  /** A stream with one durable pull consumer `w` (explicit acks). */
  const makeStream = async (name?: string, ackWaitMs = 1_000) => {
    nc ??= await connectNats();
    const jsm = await nc.jetstreamManager();
    const stream = name ?? uniqueName('IDEM_JSREV').replace(/-/g, '_');
    if (!streams.includes(stream)) streams.push(stream);
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
    await jsm.consumers.add(stream, {
      durable_name: 'w',
      ack_policy: AckPolicy.Explicit,
      ack_wait: ackWaitMs * 1_000_000,
    });
    return { jsm, js: nc.jetstream(), stream };
  };
  const fetchOne = async (js: ReturnType<NatsConnection['jetstream']>, stream: string) => {
    const m = await (await js.consumers.get(stream, 'w')).next({ expires: 3_000 });
    if (!m) throw new Error('no delivery');
    return m;
  };
  /** What an instance of the earlier version did with a delivery: its default key `stream:seq`. */
  const oldInstanceExecute = (
    m: JsMsg,
    handler: () => Promise<unknown>,
    options: { leaseMs?: number; retentionMs?: number; store?: IdempotencyStore } = {},
  ) =>
    createIdempotency({ store, ...options }).execute(
      {
        key: `${m.info.stream}:${m.info.streamSequence}`,
        scope: ['nats', m.info.stream, 'w'],
        fingerprint: fingerprint({ body: m.data }),
      },
      handler,
    );
  const until = async (done: () => boolean, ms: number) => {
    const deadline = performance.now() + ms;
    while (!done() && performance.now() < deadline) await sleep(20);
  };
  const line = (r: MessageReport<JsMsg>) =>
    `${r.message.info.streamSequence}/${r.message.info.redeliveryCount}: ${r.status}${r.legacyKey ? ' (legacy)' : ''}`;
  /** A pass-through store whose calls can be observed and altered. */
  const wrap = (
    inner: IdempotencyStore,
    hooks: Partial<Pick<IdempotencyStore, 'get' | 'acquire'>>,
  ): IdempotencyStore => ({
    capabilities: inner.capabilities,
    acquire: hooks.acquire ?? ((input) => inner.acquire(input)),
    complete: (input) => inner.complete(input),
    release: (input) => inner.release(input),
    extend: (input) => inner.extend(input),
    get: hooks.get ?? ((key) => inner.get(key)),
  });

  // FINDING (MEDIUM, isolation): the time check compares the old record's *completion* (or
  // lease deadline) with the time the message was stored, but a record of the old stream's
  // message that is still in progress when the stream is deleted and recreated completes
  // *after* the new stream's message was stored. The README's "A recreated stream's message is
  // stored after the old stream's records were made, so they do not answer for it" is false
  // then, and the commit's "within 1 s of an old record" limit understates it (the window is
  // the old handler's whole remaining run, not 1 s). Measured: old stream's seq 1 ("same")
  // held by an old instance; stream deleted, recreated, seq 1 "same" published; the new
  // message's delivery 1 fails (transient), delivery 2 is given back (in_progress, legacy)
  // while the old handler runs, then the old instance completes ~1.5 s after the new message
  // was stored and delivery 3 is acked `replayed (legacy)` with the OLD stream's outcome: the
  // new message never succeeded (handler runs 1, a failure), it is acked and gone.
  // Suggested fix: judge a record by when it was *acquired*, not completed: store-side
  // `acquiredAt`/`createdAt` (or the fence's acquisition time) >= storedAt - slack; lacking
  // that, never take an `in_progress` record whose lease began before storedAt (leaseUntil -
  // leaseMs < storedAt - slack is a sign), and never replay a completed record that was in
  // progress when this message was first looked up.
  it.fails('isolation: an old stream message still running across delete + recreate does not answer the new stream’s message of the same body', async () => {
    const { jsm, js, stream } = await makeStream();
    await js.publish(`${stream}.a`, encode('same'));
    const delivery = await fetchOne(js, stream);
    let finishOld: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      finishOld = resolve;
    });
    const old = oldInstanceExecute(
      delivery,
      async () => {
        await gate;
        return 'OLD STREAM OUTCOME';
      },
      { leaseMs: 1_500 },
    );
    await sleep(100); // the old instance holds stream:1
    await jsm.streams.delete(stream);
    await makeStream(stream);
    await js.publish(`${stream}.a`, encode('same'));
    const reports: string[] = [];
    const newRuns: string[] = [];
    const consumer = await consumeJetStream({
      consumer: await js.consumers.get(stream, 'w'),
      store,
      leaseMs: 1_500,
      retryDelayMs: 50,
      handler: async () => {
        newRuns.push('run');
        if (newRuns.length === 1) throw new Error('transient');
        return 'NEW STREAM OUTCOME';
      },
      onMessage: (r) => reports.push(line(r)),
    });
    await until(() => reports.some((r) => r.includes('in_progress')), 8_000);
    finishOld();
    await old;
    await until(() => reports.some((r) => /processed|replayed/.test(r)), 8_000);
    await consumer.stop();
    // Figures (observed): reports ['1/1: failed', '1/2: in_progress (legacy)', ..., '1/N: replayed (legacy)'], newRuns 1.
    expect(reports.at(-1)).toMatch(/processed$/);
    expect(newRuns).toHaveLength(2);
  });

  // FINDING (LOW, exactly-once): "completion = expiresAt - retentionMs" is not what the Redis
  // store records when retentionMs is large: every Redis deadline is capped at 2^53 - 1, so
  // with retentionMs = Number.MAX_SAFE_INTEGER (the longest core accepts, a natural "keep
  // forever") the old record's completion reads as ~0 (1970), the record is taken for an older
  // one and the message whose ack was lost runs again under the new key: 2 handler runs, both
  // instances with the same retentionMs (what the README asks for). Suggested fix: when
  // expiresAt - retentionMs is implausible (<= 0, or expiresAt is at the cap 2^53 - 1), fall
  // back to leaseUntil (the last lease deadline, >= acquisition + leaseMs, also after storedAt)
  // or better a stored acquisition time; document the cap.
  it.fails('exactly-once: an old record with retentionMs = MAX_SAFE_INTEGER answers the redelivery (Redis caps deadlines at 2^53 - 1)', async () => {
    const { js, stream } = await makeStream();
    await js.publish(`${stream}.a`, encode('keep-forever'));
    const delivery = await fetchOne(js, stream);
    let runs = 0;
    const retentionMs = Number.MAX_SAFE_INTEGER;
    await oldInstanceExecute(
      delivery,
      async () => {
        runs += 1;
        return 'billed';
      },
      { retentionMs },
    ); // ack lost
    const record = await store.get(
      (await import('@idem/core')).deriveStorageKey(['nats', stream, 'w'], `${stream}:1`),
    );
    // The completion the bridge computes: far before the message was stored.
    expect(record?.expiresAt).toBe(2 ** 53 - 1);
    expect((record?.expiresAt ?? 0) - retentionMs).toBe(0);
    const reports: string[] = [];
    const consumer = await consumeJetStream({
      consumer: await js.consumers.get(stream, 'w'),
      store,
      retentionMs,
      retryDelayMs: 50,
      handler: async () => {
        runs += 1;
        return 'billed';
      },
      onMessage: (r) => reports.push(line(r)),
    });
    await until(() => reports.length >= 1, 8_000);
    await consumer.stop();
    // Figures (observed): reports ['1/2: processed'], runs 2.
    expect(reports).toEqual(['1/2: replayed (legacy)']);
    expect(runs).toBe(1);
  });

  // FINDING (LOW, exactly-once): the lookup is a read, then the engine acquires under the key
  // the read chose: two new instances that hold one message at once (the first paused
  // between its read and its acquire long enough for ack_wait to pass: a GC/VM pause, a
  // process partitioned from NATS) choose different keys when the old record changes in
  // between, and both run. Measured: old instance holds stream:1; new instance N1 reads it
  // (in progress, the message's own: legacy key chosen) and pauses 2.5 s before acquiring;
  // the old handler fails (released tombstone); the redelivery goes to N2, which reads the
  // tombstone and runs under the new key (processed); N1 resumes, acquires the released
  // legacy key and runs too: 2 successful handler runs for one message, one record under each
  // key. Without the bridge both new instances use the new key and its acquire is atomic (one
  // run). Suggested fix: re-check after acquiring: an instance that acquired a key other than
  // the one holding the message's record reads the other key once more (the new key after
  // acquiring a legacy key that was released/absent, the legacy key after acquiring the new
  // key) and, if it finds a live record of the message there, releases and gives back; or
  // take the legacy key only when the acquire *finds* a record or takes over an in-progress
  // one, never when it freshly acquires a released one.
  it.fails('exactly-once: two new instances racing on redeliveries while the old record changes do not both run', async () => {
    const { js, stream } = await makeStream(undefined, 1_000);
    await js.publish(`${stream}.a`, encode('race'));
    const delivery = await fetchOne(js, stream);
    let failOld: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      failOld = resolve;
    });
    const old = oldInstanceExecute(
      delivery,
      async () => {
        await gate;
        throw new Error('old handler failed');
      },
      { leaseMs: 3_000 },
    ).catch(() => 'released');
    const successes: string[] = [];
    const reports: string[] = [];
    let n1Read = false;
    // N1: pauses 2.5 s between its legacy read and its acquire, sends no working() meanwhile.
    const n1Store = wrap(store, {
      get: async (key) => {
        const r = await store.get(key);
        n1Read = true;
        return r;
      },
      acquire: async (input) => {
        if (n1Read) await sleep(2_500);
        return store.acquire(input);
      },
    });
    const n1 = await consumeJetStream({
      consumer: await js.consumers.get(stream, 'w'),
      store: n1Store,
      retryDelayMs: 50,
      workingIntervalMs: 60_000,
      handler: async () => {
        successes.push('N1');
        return 'billed';
      },
      onMessage: (r) => reports.push(`N1 ${line(r)}`),
    });
    await until(() => n1Read, 8_000);
    expect(n1Read).toBe(true);
    const n1Stopped = n1.stop(10_000); // takes no more messages: the next delivery goes to N2
    failOld();
    await old;
    const n2 = await consumeJetStream({
      consumer: await js.consumers.get(stream, 'w'),
      store,
      retryDelayMs: 50,
      handler: async () => {
        successes.push('N2');
        return 'billed';
      },
      onMessage: (r) => reports.push(`N2 ${line(r)}`),
    });
    await n1Stopped;
    await until(() => reports.some((r) => r.startsWith('N2')), 8_000);
    await n2.stop();
    expect(reports.some((r) => r.startsWith('N2'))).toBe(true); // N2 did get a redelivery
    // Figures (observed): successes ['N2', 'N1'], reports ['N2 1/3: processed', 'N1 1/2: processed (legacy)'].
    expect(successes).toHaveLength(1);
  });

  it('holds: a redelivery racing the old instance’s completion (read in progress, completed before the acquire) is replayed, run once', async () => {
    const { jsm, js, stream } = await makeStream(undefined, 1_000);
    await js.publish(`${stream}.a`, encode('race-complete'));
    const delivery = await fetchOne(js, stream);
    let runs = 0;
    let finishOld: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      finishOld = resolve;
    });
    const old = oldInstanceExecute(
      delivery,
      async () => {
        runs += 1;
        await gate;
        return 'billed';
      },
      { leaseMs: 3_000 },
    );
    // The new instance's read sees the old record in progress; its answer comes back only
    // after the old instance completed.
    let reads = 0;
    const slowAnswer = wrap(store, {
      get: async (key) => {
        const r = await store.get(key);
        reads += 1;
        if (reads === 1) {
          expect(r?.status).toBe('in_progress');
          finishOld();
          await old;
        }
        return r;
      },
    });
    const reports: string[] = [];
    const consumer = await consumeJetStream({
      consumer: await js.consumers.get(stream, 'w'),
      store: slowAnswer,
      retryDelayMs: 50,
      handler: async () => {
        runs += 1;
        return 'billed';
      },
      onMessage: (r) => reports.push(line(r)),
    });
    await until(() => reports.length >= 1, 8_000);
    await consumer.stop();
    expect(reports).toEqual(['1/2: replayed (legacy)']);
    expect(runs).toBe(1);
    expect((await jsm.consumers.info(stream, 'w')).num_ack_pending).toBe(0);
  });

  // FINDING (LOW, fencing): the store failing between the legacy read and the acquire
  // (the acquire applied, its answer lost) leaves the legacy key a `released` tombstone (the
  // engine gives up its own acquisition), and the next redelivery reads that tombstone and
  // runs under the NEW key with fence 1: the dead old holder's fence is also 1, on another
  // storage key. Measured: reports ['1/2: failed (legacy)', '1/3: processed'], the handler's
  // fence 1 (README: "taken over under the old key with a higher fence"). The handler ran once,
  // but if the old holder was not dead but paused (its lease passed), its late writes carry
  // fence 1 on the legacy storage key and the new run's fence 1 is on another key: a fenced
  // downstream can no longer order them (without the bridge the retry acquires the same key
  // with fence 3). The same happens without any store fault when the taken-over handler
  // throws once (see the next test). Suggested fix: a tombstone whose fence is above 1 (a
  // takeover happened under the legacy key) is the message's own history: keep deciding the
  // message under the legacy key when the tombstone's fingerprint and time match, i.e. treat
  // `released` like the other statuses for the time/fingerprint check (using its expiresAt -
  // retentionMs as the release time), instead of refusing every tombstone.
  it.fails('fencing: the store failing between the legacy read and the acquire (acquire applied, answer lost): given back, then run once under the old key above the dead holder’s fence', async () => {
    const { js, stream } = await makeStream(undefined, 1_000);
    await js.publish(`${stream}.a`, encode('lost-answer'));
    const delivery = await fetchOne(js, stream);
    // The old instance acquired stream:1 and died (its 300 ms lease passes unrenewed).
    const scope = ['nats', stream, 'w'];
    const { deriveStorageKey } = await import('@idem/core');
    const legacyStorageKey = deriveStorageKey(scope, `${stream}:1`);
    const acquired = await store.acquire({
      key: legacyStorageKey,
      fingerprint: fingerprint({ body: delivery.data }),
      owner: 'old-instance',
      leaseMs: 300,
      retentionMs: 60_000,
    });
    expect(acquired.kind).toBe('acquired');
    await sleep(400);
    let failures = 0;
    const flaky = wrap(store, {
      acquire: async (input) => {
        const answer = await store.acquire(input);
        if (failures < 1) {
          failures += 1;
          throw new StoreUnavailableError('answer lost', { cause: new Error('reset') });
        }
        return answer;
      },
    });
    const reports: string[] = [];
    const fences: number[] = [];
    const consumer = await consumeJetStream({
      consumer: await js.consumers.get(stream, 'w'),
      store: flaky,
      leaseMs: 400,
      storeTimeoutMs: 1_000,
      retryDelayMs: 50,
      handler: async (_m, ctx) => {
        fences.push(ctx.fence);
        return 'billed';
      },
      onMessage: (r) => reports.push(line(r)),
    });
    await until(() => reports.some((r) => /processed|replayed/.test(r)), 10_000);
    await consumer.stop();
    // Figures (observed): reports ['1/2: failed (legacy)', '1/3: processed'], fences [1].
    expect(fences).toHaveLength(1);
    expect(reports.at(-1)).toMatch(/processed \(legacy\)$/);
    expect(fences[0]).toBeGreaterThanOrEqual(2); // above the dead old holder's fence 1
    expect((await store.get(legacyStorageKey))?.status).toBe('completed');
  });

  // FINDING (LOW, fencing): see above; no store fault needed. A taken-over legacy record
  // (dead old holder, fence 1) whose handler throws once is released (tombstone, fence 2); the
  // next redelivery runs under the new key with fence 1 again. Measured: fences [2, 1],
  // reports ['1/2: failed (legacy)', '1/3: processed'].
  it.fails('fencing: a taken-over legacy message whose handler fails once is retried with a fence above every earlier one', async () => {
    const { js, stream } = await makeStream(undefined, 1_000);
    await js.publish(`${stream}.a`, encode('takeover-fails'));
    const delivery = await fetchOne(js, stream);
    const { deriveStorageKey } = await import('@idem/core');
    const acquired = await store.acquire({
      key: deriveStorageKey(['nats', stream, 'w'], `${stream}:1`),
      fingerprint: fingerprint({ body: delivery.data }),
      owner: 'old-instance',
      leaseMs: 300,
      retentionMs: 60_000,
    });
    expect(acquired.kind).toBe('acquired');
    await sleep(400);
    const reports: string[] = [];
    const fences: number[] = [];
    const consumer = await consumeJetStream({
      consumer: await js.consumers.get(stream, 'w'),
      store,
      retryDelayMs: 50,
      handler: async (_m, ctx) => {
        fences.push(ctx.fence);
        if (fences.length === 1) throw new Error('transient');
        return 'billed';
      },
      onMessage: (r) => reports.push(line(r)),
    });
    await until(() => reports.some((r) => /processed|replayed/.test(r)), 8_000);
    await consumer.stop();
    expect(fences).toHaveLength(2);
    expect(fences[0]).toBe(2);
    expect(fences[1]).toBeGreaterThan(2);
  });

  it('holds (bounded time): a legacy read that hangs gives each redelivery back within storeTimeoutMs; once the store answers, the message runs once', async () => {
    const { js, stream } = await makeStream(undefined, 1_000);
    await js.publish(`${stream}.a`, encode('hang'));
    const first = await fetchOne(js, stream);
    first.nak(); // delivery 1 given back: the next one is a redelivery (looked up)
    let hang = true;
    let readStartedAt = 0;
    const hanging = wrap(store, {
      get: (key) => {
        readStartedAt = performance.now();
        return hang ? new Promise<never>(() => {}) : store.get(key);
      },
    });
    const times: { status: string; ms: number }[] = [];
    let runs = 0;
    const consumer = await consumeJetStream({
      consumer: await js.consumers.get(stream, 'w'),
      store: hanging,
      storeTimeoutMs: 200,
      retryDelayMs: 50,
      handler: async () => {
        runs += 1;
        return 'ok';
      },
      onMessage: (r) => times.push({ status: line(r), ms: performance.now() - readStartedAt }),
    });
    await until(() => times.length >= 3, 8_000);
    hang = false;
    await until(() => times.some((t) => /processed/.test(t.status)), 8_000);
    await consumer.stop();
    expect(times.slice(0, 3).every((t) => / failed$/.test(t.status))).toBe(true);
    // Each hung read is cut at storeTimeoutMs (200 ms): the message is given back then.
    for (const t of times.slice(0, 3)) {
      expect(t.ms).toBeGreaterThanOrEqual(190);
      expect(t.ms).toBeLessThan(600);
    }
    expect(runs).toBe(1);
    expect(times.at(-1)?.status).toMatch(/processed$/);
  });

  it('holds (bad input): legacyKeyLookup of another type, and a store without a get function while it is on, are typed errors before consuming', async () => {
    let consumed = 0;
    const consumer = {
      consume: async () => {
        consumed += 1;
        throw new Error('must not be reached');
      },
    };
    const base = { consumer, store, handler: async () => 'x' };
    for (const bad of ['true', 1, 0, null, {}, [], Number.NaN]) {
      await expect(
        consumeJetStream({ ...base, legacyKeyLookup: bad as unknown as boolean }),
      ).rejects.toBeInstanceOf(InvalidInputError);
    }
    const noGet = { ...wrap(store, {}), get: 42 } as unknown as IdempotencyStore;
    await expect(consumeJetStream({ ...base, store: noGet })).rejects.toBeInstanceOf(
      InvalidInputError,
    );
    await expect(
      consumeJetStream({ ...base, store: noGet, legacyKeyLookup: true }),
    ).rejects.toBeInstanceOf(InvalidInputError);
    expect(consumed).toBe(0);
    // Off, or a custom key: no get needed.
    await expect(
      consumeJetStream({ ...base, store: noGet, legacyKeyLookup: false }),
    ).rejects.toThrow('must not be reached');
    await expect(
      consumeJetStream({ ...base, store: noGet, key: (m) => m.info.streamSequence }),
    ).rejects.toThrow('must not be reached');
    expect(consumed).toBe(2);
  });

  // FINDING (LOW, documentation): the README's clock limit names one direction only ("A store
  // clock more than 1 s behind the NATS server's ... the message runs again"). A store clock
  // AHEAD of the NATS server's by X widens the recreated-stream window from 1 s to 1 s + X: a
  // recreated stream's same-body message stored 1.3 s after the old record completed, with
  // the store 3 s ahead (emulated by shifting the deadlines the bridge reads by +3 s), is
  // acked `replayed (legacy)` with the old stream's outcome, its handler never run (runs 1:
  // the failed first delivery). Suggested fix: document both directions (the slack plus the
  // store's lead over the NATS server), or measure the skew (Redis TIME vs the message's
  // timestampNanos of a fresh publish) at start-up and refuse/ warn beyond the slack.
  it.fails('isolation: a store clock 3 s ahead of the NATS server does not let a recreated stream’s same-body message (1.3 s later) be replayed', async () => {
    const skewMs = 3_000;
    const ahead = wrap(store, {
      get: async (key) => {
        const r = await store.get(key);
        return r && { ...r, leaseUntil: r.leaseUntil + skewMs, expiresAt: r.expiresAt + skewMs };
      },
    });
    const { jsm, js, stream } = await makeStream();
    await js.publish(`${stream}.a`, encode('same'));
    const delivery = await fetchOne(js, stream);
    await oldInstanceExecute(delivery, async () => 'OLD STREAM OUTCOME');
    expect(LEGACY_CLOCK_SLACK_MS).toBeLessThan(1_300);
    await sleep(1_300);
    await jsm.streams.delete(stream);
    await makeStream(stream);
    await js.publish(`${stream}.a`, encode('same'));
    let runs = 0;
    const reports: string[] = [];
    const consumer = await consumeJetStream({
      consumer: await js.consumers.get(stream, 'w'),
      store: ahead,
      retryDelayMs: 50,
      handler: async () => {
        runs += 1;
        if (runs === 1) throw new Error('transient');
        return 'NEW STREAM OUTCOME';
      },
      onMessage: (r) => reports.push(line(r)),
    });
    await until(() => reports.length >= 2, 8_000);
    await consumer.stop();
    // Figures (observed): reports ['1/1: failed', '1/2: replayed (legacy)'], runs 1.
    expect(reports).toEqual(['1/1: failed', '1/2: processed']);
    expect(runs).toBe(2);
  });
});
