import { sleep } from './processes.js';

/** One HTTP attempt a chaos client made. */
export interface Attempt {
  /** Which of the key's clients sent it (0 or 1); -1 a recovery probe, -2 a usage read, -3 a readiness probe. */
  client: number;
  instance: string;
  startedAt: number;
  /** Until the whole body was read, or the failure. */
  latencyMs: number;
  status?: number;
  /** Network failure or timeout (`TimeoutError`), when there was no answer. */
  error?: string;
  /** The `type` of an `application/problem+json` answer. */
  problem?: string;
}

/** A logical request: one idempotency key, sent by several clients until each has an answer. */
export interface LogicalRequest {
  /** The id written into the prompt (`chaos:<id>`), which the upstream counts by. */
  id: string;
  key: string;
  attempts: Attempt[];
  /** The 2xx body each client got, or undefined if it never got one. */
  answers: (string | undefined)[];
  /** A final 4xx other than 408/409/425/429 (never expected here). */
  rejected?: number;
  /** Sent as a stream to `/v1/chat/completions` rather than to `/api/messages`. */
  streamed?: boolean;
}

/** Options of {@link drive}. */
export interface DriveOptions {
  /** Unique per row; part of every key and prompt. */
  tag: string;
  count: number;
  /** Logical requests start evenly over this window. */
  spreadMs: number;
  /** Clients per key, started together. @default 2 */
  clientsPerKey?: number;
  /** Absolute time after which no client starts another attempt (read on each retry). */
  deadline(): number;
  attemptTimeoutMs: number;
  /** The instances to choose from, read on every attempt (it changes when an app restarts). */
  instances(): readonly string[];
  /** Appended to the prompt (e.g. `size:1048576`). */
  promptExtra?: string;
  /** Attempts in flight per instance URL, kept up to date (lets a fault hit busy instances). */
  inFlight?: Map<string, number>;
  /** Every n-th logical request is streamed (see {@link attempt}); none when absent. */
  streamEvery?: number;
}

const RETRYABLE_4XX = new Set([408, 409, 425, 429]);

/** `Retry-After` in ms (delay-seconds only), capped at 1 s so clients keep probing. */
function retryAfterMs(response: Response): number | undefined {
  const value = response.headers.get('retry-after');
  if (value === null || !/^\d+$/.test(value.trim())) return undefined;
  return Math.min(1_000, Number(value) * 1_000);
}

/**
 * Full-jitter exponential backoff: 25 ms doubling, capped at 4 s. Clients wait at least the
 * `Retry-After` and at most this much longer, so hundreds of keys stuck behind an outage do
 * not turn into a retry storm that measures the machine instead of the app (recovery is
 * measured by the probes, not by these clients).
 */
const backoffMs = (retry: number) => Math.random() * Math.min(4_000, 25 * 2 ** retry);

/**
 * The answer of a complete `chat.completion.chunk` stream as `{"content": ...}` (the shape
 * the verdict reads), or undefined when it did not end with `data: [DONE]`.
 */
export function streamedAnswer(text: string): string | undefined {
  let content = '';
  let done = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith('data: ')) continue;
    if (line === 'data: [DONE]') {
      done = true;
      continue;
    }
    const delta = (JSON.parse(line.slice(6)) as { choices?: { delta?: { content?: unknown } }[] })
      .choices?.[0]?.delta?.content;
    if (typeof delta === 'string') content += delta;
  }
  return done ? JSON.stringify({ content }) : undefined;
}

/**
 * Sends one attempt; resolves with what happened (never rejects). `stream`: to
 * `/v1/chat/completions` with `stream: true` (a stream cut short is a failed attempt, and the
 * answer is the streamed text, see {@link streamedAnswer}), else to `/api/messages`.
 */
export async function attempt(
  url: string,
  key: string,
  prompt: string,
  client: number,
  timeoutMs: number,
  stream = false,
): Promise<{ attempt: Attempt; response?: Response; body?: string }> {
  const startedAt = Date.now();
  const record: Attempt = { client, instance: url, startedAt, latencyMs: 0 };
  try {
    const response = await fetch(`${url}${stream ? '/v1/chat/completions' : '/api/messages'}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: 'Bearer chaos-suite',
        'idempotency-key': key,
      },
      body: JSON.stringify(
        stream
          ? { model: 'chaos-1', stream: true, messages: [{ role: 'user', content: prompt }] }
          : { prompt, model: 'chaos-1' },
      ),
      signal: AbortSignal.timeout(timeoutMs),
    });
    let body = await response.text();
    if (stream && response.ok) {
      const answer = streamedAnswer(body);
      if (answer === undefined) throw Object.assign(new Error('cut'), { name: 'StreamCut' });
      body = answer;
    }
    record.status = response.status;
    record.latencyMs = Date.now() - startedAt;
    if (!response.ok && response.headers.get('content-type')?.includes('problem+json')) {
      try {
        const type = (JSON.parse(body) as { type?: unknown }).type;
        if (typeof type === 'string') record.problem = type;
      } catch {
        // Not JSON after all: no problem type to report.
      }
    }
    return { attempt: record, response, body };
  } catch (error) {
    record.latencyMs = Date.now() - startedAt;
    record.error = error instanceof Error ? error.name : String(error);
    return { attempt: record };
  }
}

/** One client of a key: retries with the same key until a final answer or the deadline. */
async function runClient(request: LogicalRequest, client: number, prompt: string, o: DriveOptions) {
  for (let retry = 0; Date.now() < o.deadline(); retry++) {
    const urls = o.instances();
    if (urls.length === 0) {
      await sleep(50);
      continue;
    }
    const url = urls[Math.floor(Math.random() * urls.length)] as string;
    o.inFlight?.set(url, (o.inFlight.get(url) ?? 0) + 1);
    const result = await attempt(
      url,
      request.key,
      prompt,
      client,
      o.attemptTimeoutMs,
      request.streamed,
    );
    o.inFlight?.set(url, (o.inFlight.get(url) ?? 1) - 1);
    request.attempts.push(result.attempt);
    const status = result.attempt.status;
    if (status !== undefined && status >= 200 && status < 300) {
      request.answers[client] = result.body;
      return;
    }
    if (status !== undefined && status < 500 && !RETRYABLE_4XX.has(status)) {
      request.rejected = status;
      return;
    }
    const floor = (result.response && retryAfterMs(result.response)) ?? 0;
    const wait = Math.max(floor, backoffMs(retry));
    await sleep(Math.max(0, Math.min(wait, o.deadline() - Date.now())));
  }
}

/**
 * Drives `count` logical requests, each sent by `clientsPerKey` concurrent clients with one
 * key, to a random instance per attempt. Resolves once every client has an answer or has
 * passed the deadline.
 */
export async function drive(o: DriveOptions): Promise<LogicalRequest[]> {
  const clients = o.clientsPerKey ?? 2;
  const requests: LogicalRequest[] = [];
  const running: Promise<void>[] = [];
  const start = Date.now();
  for (let i = 0; i < o.count; i++) {
    const at = start + (o.spreadMs * i) / o.count;
    if (at > Date.now()) await sleep(at - Date.now());
    if (Date.now() >= o.deadline()) break;
    const id = `${o.tag}-${i}`;
    const request: LogicalRequest = {
      id,
      key: `chaos-${id}`,
      attempts: [],
      answers: new Array(clients).fill(undefined),
      ...(o.streamEvery && i % o.streamEvery === 0 ? { streamed: true } : {}),
    };
    requests.push(request);
    const prompt = `chaos:${id} ${o.promptExtra ?? ''}`.trim();
    for (let c = 0; c < clients; c++) running.push(runClient(request, c, prompt, o));
  }
  await Promise.all(running);
  return requests;
}

/** Options of {@link probeRecovery}. */
export interface ProbeOptions {
  tag: string;
  /** The instances that must each answer 2xx. */
  targets: readonly string[];
  /** When the fault ended (ms since epoch). */
  since: number;
  /**
   * Per target: what one keyed request took on it right before the fault (see
   * {@link warmKeyedMs}). A keyed 2xx cannot come sooner after `since` than one request's own
   * time, which on a loaded machine is most of 2 s by itself: that much, but never more than
   * the first 2xx took itself, is taken out of its time, and what is left is what the fault
   * cost. @default 0
   */
  warmKeyedMs?: ReadonlyMap<string, number>;
  /** Give up after this long. */
  maxMs: number;
  attemptTimeoutMs: number;
  /** Every probe attempt goes here (they count for 500s and latency too). */
  attempts: Attempt[];
}

/** One `GET /readyz` (client -3); resolves with the attempt, never rejects. */
async function readiness(url: string, timeoutMs: number): Promise<Attempt> {
  const startedAt = Date.now();
  const record: Attempt = { client: -3, instance: url, startedAt, latencyMs: 0 };
  try {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(timeoutMs) });
    await response.arrayBuffer();
    record.status = response.status;
  } catch (error) {
    record.error = error instanceof Error ? error.name : String(error);
  }
  record.latencyMs = Date.now() - startedAt;
  return record;
}

/**
 * What one keyed request (as a recovery probe sends it) takes on each of `targets` now: the
 * fastest of three sent one after another to each, the targets side by side (a first 2xx
 * cannot come sooner than that; the fastest, so that a slow one under the row's traffic does
 * not hide an app's delay). A target that
 * does not answer all three 2xx gets none (nothing is taken out of its recovery).
 */
export async function warmKeyedMs(
  targets: readonly string[],
  tag: string,
  attemptTimeoutMs: number,
  attempts: Attempt[],
): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  await Promise.all(
    targets.map(async (url, t) => {
      const took: number[] = [];
      for (let i = 0; i < 3; i++) {
        const id = `warm-${tag}-${t}-${i}`;
        const { attempt: a } = await attempt(
          url,
          `chaos-${id}`,
          `chaos:${id}`,
          -1,
          attemptTimeoutMs,
        );
        attempts.push(a);
        const status = a.status ?? 0;
        if (status < 200 || status >= 300) return;
        took.push(a.latencyMs);
      }
      result.set(url, Math.min(...took));
    }),
  );
  return result;
}

/**
 * Time from `since` until every target is back: it answered a fresh keyed request 2xx, and
 * its readiness endpoint (`GET /readyz`, what a load balancer asks) 200. A new probe of each
 * kind every 100 ms per target, until each has answered. Undefined if one never did within
 * `maxMs`. Waits for its probes in flight before resolving.
 */
export async function probeRecovery(o: ProbeOptions): Promise<number | undefined> {
  const inFlight: Promise<unknown>[] = [];
  let n = 0;
  const ready = async (url: string): Promise<number | undefined> => {
    while (Date.now() - o.since < o.maxMs) {
      const read = readiness(url, o.attemptTimeoutMs);
      inFlight.push(read);
      const [result] = await Promise.all([read, sleep(100)]);
      o.attempts.push(result);
      if (result.status === 200) return result.startedAt + result.latencyMs;
    }
    return undefined;
  };
  const one = async (url: string): Promise<number | undefined> => {
    const readyAt = ready(url);
    const pending = new Set<Promise<void>>();
    let firstOk: number | undefined;
    // How long that first 2xx itself took, from its send.
    let firstOkTook = 0;
    while (firstOk === undefined && Date.now() - o.since < o.maxMs) {
      const id = `probe-${o.tag}-${n++}`;
      const sent = attempt(url, `chaos-${id}`, `chaos:${id}`, -1, o.attemptTimeoutMs).then(
        (result) => {
          o.attempts.push(result.attempt);
          const status = result.attempt.status ?? 0;
          if (status >= 200 && status < 300 && firstOk === undefined) {
            firstOk = Date.now();
            firstOkTook = result.attempt.latencyMs;
          }
        },
      );
      inFlight.push(sent);
      pending.add(sent);
      void sent.finally(() => pending.delete(sent));
      // A new probe every 100 ms, at most 4 in flight per target: enough resolution for a
      // 2 s limit without turning the probes into a retry storm.
      await Promise.race([sent, sleep(100)]);
      while (pending.size >= 4) await Promise.race(pending);
    }
    const readyOk = await readyAt;
    if (process.env.CHAOS_DEBUG) {
      const at = (t: number | undefined) => (t === undefined ? 'never' : `+${t - o.since} ms`);
      const warm = o.warmKeyedMs?.get(url);
      const store = warm ? ` (less ${warm} ms, one request's own time before the fault)` : '';
      console.log(
        `    recovery of ${url}: keyed 2xx ${at(firstOk)}${store}, /readyz 200 ${at(readyOk)}`,
      );
      // Each probe of this target, so that a slow recovery shows what the app answered.
      for (const a of o.attempts.filter((x) => x.instance === url && x.startedAt >= o.since)) {
        const kind = a.client === -3 ? '/readyz' : a.client === -2 ? 'read' : 'keyed';
        const answer = `${a.status ?? a.error}${a.problem ? ` ${a.problem}` : ''}`;
        console.log(`      ${kind} +${a.startedAt - o.since} ms, ${a.latencyMs} ms: ${answer}`);
      }
    }
    if (firstOk === undefined || readyOk === undefined) return undefined;
    // Never more than that 2xx took itself: time the app refused or dropped probes before it
    // (a backoff, a circuit kept after the store is back) is all counted.
    const own = Math.min(o.warmKeyedMs?.get(url) ?? 0, firstOkTook);
    return Math.max(0, firstOk - own - o.since, readyOk - o.since);
  };
  const times = await Promise.all(o.targets.map(one));
  await Promise.all(inFlight);
  if (times.some((t) => t === undefined)) return undefined;
  return Math.max(0, ...(times as number[]));
}

/** Options of {@link watchReads}. */
export interface WatchOptions {
  /** The instances to read from, read each round. */
  instances(): readonly string[];
  /** Read-only path every instance is asked, e.g. `/v1/usage`. */
  path: string;
  everyMs: number;
  attemptTimeoutMs: number;
  /** Each read lands here (client -2): it counts for 500s and latency like any request. */
  attempts: Attempt[];
  signal: AbortSignal;
}

/**
 * Reads `path` from every instance every `everyMs` until `signal` aborts: store-backed reads
 * (the ledger) must stay bounded and never 500 during a fault, as the issue found
 * `/v1/usage` hanging through a silent connection. Resolves once its reads in flight end.
 */
export async function watchReads(o: WatchOptions): Promise<void> {
  const inFlight: Promise<void>[] = [];
  while (!o.signal.aborted) {
    for (const url of o.instances()) {
      const startedAt = Date.now();
      const record: Attempt = { client: -2, instance: url, startedAt, latencyMs: 0 };
      const read = fetch(`${url}${o.path}`, { signal: AbortSignal.timeout(o.attemptTimeoutMs) })
        .then(async (response) => {
          await response.arrayBuffer();
          record.status = response.status;
        })
        .catch((error: unknown) => {
          record.error = error instanceof Error ? error.name : String(error);
        })
        .finally(() => {
          record.latencyMs = Date.now() - startedAt;
          o.attempts.push(record);
        });
      inFlight.push(read);
    }
    await sleep(o.everyMs);
  }
  await Promise.all(inFlight);
}
