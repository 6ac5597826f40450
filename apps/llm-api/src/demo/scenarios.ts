import { getIdempotencyInfo, runBatch } from '@idem/client';
import { generateKey } from '@idem/core';
import OpenAI from 'openai';
import { API_KEY, Harness } from './harness.js';

/** A scenario drives the server through one kind of fault; it returns the 500s it scripted. */
export interface Scenario {
  name: string;
  run(h: Harness): Promise<{ scriptedFailures: number }>;
}

const tag = () => generateKey().slice(0, 8);

/** Plain requests: one attempt each, the baseline. */
export const plain: Scenario = {
  name: 'plain requests',
  async run(h) {
    for (let i = 0; i < 3; i++) {
      const prompt = `Plain request ${i} ${tag()}`;
      const got = await h.postMessage(prompt);
      recordMessage(h, this.name, prompt, got);
    }
    return { scriptedFailures: 0 };
  },
};

function messageBody(prompt: string) {
  return { prompt, model: 'local-1' };
}

/** Records one logical POST /api/messages (its key, body and what the client got) for the checks. */
function recordMessage(
  h: Parameters<Scenario['run']>[0],
  scenario: string,
  prompt: string,
  got: { key?: string; id: string; tokens: number },
  key = got.key,
): void {
  if (key === undefined) throw new Error('A recorded message needs its idempotency key');
  h.record(
    {
      key,
      path: '/api/messages',
      body: messageBody(prompt),
      auth: undefined,
      messageId: got.id,
      tokens: got.tokens,
    },
    scenario,
  );
}

/** The proxy loses each answer after the server committed it; the retry is a replay. */
export const droppedResponses: Scenario = {
  name: 'response dropped after commit',
  async run(h) {
    for (let i = 0; i < 3; i++) {
      const prompt = `Dropped answer ${i} ${tag()}`;
      const got = await h.postMessage(prompt, { fault: 'drop-response' });
      if (!got.replayed) throw new Error('A retry after a dropped response was not a replay');
      recordMessage(h, this.name, prompt, got);
    }
    return { scriptedFailures: 0 };
  },
};

/** The model fails twice with a 500 for each prompt; the third execution succeeds. */
export const modelFailures: Scenario = {
  name: 'model 500s, then success',
  async run(h) {
    for (let i = 0; i < 2; i++) {
      const prompt = `[fail:2] Flaky model ${i} ${tag()}`;
      const got = await h.postMessage(prompt);
      recordMessage(h, this.name, prompt, got);
    }
    return { scriptedFailures: 4 };
  },
};

/** The model stalls longer than the client's per-attempt timeout (1 s). */
export const stall: Scenario = {
  name: 'stall > client timeout',
  async run(h) {
    const prompt = `[stall:1500] Slow model ${tag()}`;
    const got = await h.postMessage(prompt);
    recordMessage(h, this.name, prompt, got);
    return { scriptedFailures: 0 };
  },
};

/** Five submits of one logical request at once (a double-clicked button, several tabs). */
export const concurrentDuplicates: Scenario = {
  name: 'concurrent duplicate submits (x5)',
  async run(h) {
    const key = generateKey();
    const prompt = `[slow:40] Submitted five times ${tag()}`;
    const all = await Promise.all(Array.from({ length: 5 }, () => h.postMessage(prompt, { key })));
    const ids = new Set(all.map((a) => a.id));
    if (ids.size !== 1) throw new Error(`Duplicate submits got ${ids.size} different messages`);
    const first = all[0]!;
    recordMessage(h, this.name, prompt, first, key);
    return { scriptedFailures: 0 };
  },
};

/** Six prompts through the openai SDK with runBatch's keys, two answers lost; then the same batch again. */
export const batch: Scenario = {
  name: 'batch of 6 via runBatch, run twice',
  async run(h) {
    const prompts = Array.from({ length: 6 }, (_, i) => `Batch item ${i} ${tag()}`);
    const batchId = `demo-batch-${generateKey()}`;
    const item = async (prompt: string, ctx: { key: string; index: number }) => {
      const completion = await h.openai.chat.completions.create(Harness.chatBody(prompt), {
        headers: {
          'Idempotency-Key': ctx.key,
          ...(ctx.index % 3 === 1 ? { 'x-demo-fault': 'drop-response' } : {}),
        },
      });
      return { id: completion.id, tokens: completion.usage?.total_tokens ?? 0 };
    };
    const first = await runBatch(prompts, item, { batchId, concurrency: 3 });
    const again = await runBatch(prompts, item, { batchId, concurrency: 3 });
    first.results.forEach((result, index) => {
      const second = again.results[index];
      if (!result.ok || !second?.ok) throw new Error(`Batch item ${index} failed`);
      if (second.value.id !== result.value.id)
        throw new Error('The re-run batch created a new message');
      h.record(
        {
          key: result.key,
          path: '/v1/chat/completions',
          body: Harness.chatBody(prompts[index]!),
          auth: h.auth,
          messageId: result.value.id,
          tokens: result.value.tokens,
        },
        this.name,
      );
    });
    return { scriptedFailures: 0 };
  },
};

/** A streamed completion cut mid-stream by the network, retried with the same key. */
export const interruptedStream: Scenario = {
  name: 'stream interrupted, retried',
  async run(h) {
    const key = generateKey();
    const prompt = `[slow:30] Streamed and interrupted ${tag()}`;
    const body = Harness.streamBody(prompt);
    let partial = '';
    // A client that does not resume streams: the cut reaches the reader, the retry replays.
    const noResume = new OpenAI({
      baseURL: `${h.proxyUrl}/v1`,
      apiKey: API_KEY,
      fetch: h.idempotentFetch({ resumeStreams: false }),
      maxRetries: 0,
    });
    try {
      const stream = await noResume.chat.completions.create(body, {
        headers: { 'Idempotency-Key': key, 'x-demo-fault': 'cut-stream:700' },
      });
      for await (const chunk of stream) partial += chunk.choices[0]?.delta?.content ?? '';
      throw new Error('The stream was expected to break');
    } catch (error) {
      if (error instanceof Error && error.message === 'The stream was expected to break')
        throw error;
    }
    let content = '';
    let tokens = 0;
    let id = '';
    const stream = await h.openai.chat.completions.create(body, {
      headers: { 'Idempotency-Key': key },
    });
    for await (const chunk of stream) {
      id = chunk.id;
      content += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) tokens = chunk.usage.total_tokens;
    }
    if (!content.startsWith(partial) || content.length <= partial.length) {
      throw new Error('The retried stream does not continue what the interrupted one sent');
    }
    h.record(
      { key, path: '/v1/chat/completions', body, auth: h.auth, messageId: id, tokens },
      this.name,
    );
    return { scriptedFailures: 0 };
  },
};

/**
 * Re-sends every logical request made so far with its key: every answer must be a replay,
 * with no model execution and no new token billed.
 */
export function replayEverything(name: string): Scenario {
  return {
    name,
    async run(h) {
      const before = h.client.logical;
      for (const request of [...h.requests]) {
        const { body } = request;
        const headers: Record<string, string> = {
          'content-type': 'application/json',
          'idempotency-key': request.key,
        };
        if (request.auth) headers.authorization = request.auth;
        const response = await h.fetch(`${h.proxyUrl}${request.path}`, {
          method: 'POST',
          headers,
          body: JSON.stringify(body),
        });
        await response.arrayBuffer();
        if (!getIdempotencyInfo(response)?.replayed) {
          throw new Error(
            `${request.scenario}: a re-sent request was not replayed (${response.status})`,
          );
        }
      }
      if (h.client.logical !== before) throw new Error('replay created logical requests');
      return { scriptedFailures: 0 };
    },
  };
}
