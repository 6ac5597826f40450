import type { FetchFunction } from '@idem/client';
import { generateKey } from '@idem/core';
import OpenAI from 'openai';
import { API_KEY, Harness } from './harness.js';
import type { Scenario } from './scenarios.js';

/** Pause of the model between tokens in this scenario (ms). */
const TOKEN_INTERVAL_MS = 150;

async function executionsOn(serverUrl: string): Promise<number> {
  const response = await fetch(`${serverUrl}/v1/usage`);
  const usage = (await response.json()) as { model_executions: { started: number } };
  return usage.model_executions.started;
}

/**
 * A streamed completion whose connection is cut mid-generation: @idem/client resumes it with
 * the same key and `Last-Event-ID`, the server attaches the retry to the generation in flight
 * (on another server process when `otherServerUrl` is given: Redis Streams carry the chunks),
 * and the openai SDK reads one stream whose text is the model's text. The model runs once,
 * the tokens are billed once; the pause the reader saw at the cut is printed.
 */
export function liveResume(otherServerUrl?: string): Scenario {
  return {
    name: otherServerUrl
      ? 'stream cut, retry attached on the other process'
      : 'stream cut, retry attached live',
    async run(h) {
      const key = generateKey();
      const prompt = `[slow:${TOKEN_INTERVAL_MS}] Cut mid-generation, resumed live ${generateKey().slice(0, 8)}`;
      const body = Harness.streamBody(prompt);
      // Model executions, as the ledger counts them (shared by both processes on Redis).
      const before = await executionsOn(h.serverUrl);
      // The resume (it carries Last-Event-ID) goes straight to the other process, if any.
      let resumedAt: number | undefined;
      const route: FetchFunction = (input, init) => {
        const url = String(input instanceof Request ? input.url : input);
        const resume = new Headers(init?.headers).has('last-event-id');
        // The client sends its resume as soon as it sees the cut.
        if (resume) resumedAt ??= performance.now();
        return fetch(
          resume && otherServerUrl ? url.replace(h.proxyUrl, otherServerUrl) : url,
          init,
        );
      };
      const openai = new OpenAI({
        baseURL: `${h.proxyUrl}/v1`,
        apiKey: API_KEY,
        fetch: h.idempotentFetch({ fetch: route }),
        maxRetries: 0,
      });
      const arrivals: number[] = [];
      let content = '';
      let id = '';
      let tokens = 0;
      const stream = await openai.chat.completions.create(body, {
        headers: { 'Idempotency-Key': key, 'x-demo-fault': 'cut-stream:900' },
      });
      for await (const chunk of stream) {
        arrivals.push(performance.now());
        id = chunk.id;
        content += chunk.choices[0]?.delta?.content ?? '';
        if (chunk.usage) tokens = chunk.usage.total_tokens;
      }
      const afterCut = arrivals.find((at) => resumedAt !== undefined && at > resumedAt);
      if (resumedAt === undefined || afterCut === undefined)
        throw new Error('The stream was not cut and resumed');
      // From the resume request to the next token it brought.
      const toNextToken = afterCut - resumedAt;
      let gap = 0;
      for (let i = 1; i < arrivals.length; i++)
        gap = Math.max(gap, (arrivals[i] as number) - (arrivals[i - 1] as number));
      // The model's own text, from the recorded answer (a replay runs nothing).
      let replayed = '';
      const replay = await new OpenAI({
        baseURL: `${h.proxyUrl}/v1`,
        apiKey: API_KEY,
        fetch: h.fetch,
        maxRetries: 0,
      }).chat.completions.create(body, { headers: { 'Idempotency-Key': key } });
      for await (const chunk of replay) replayed += chunk.choices[0]?.delta?.content ?? '';
      if (content !== replayed || content.length === 0)
        throw new Error('The resumed stream is not the model text');
      const executions = (await executionsOn(h.serverUrl)) - before;
      if (executions !== 1) throw new Error(`The model ran ${executions} times for one request`);
      console.log(
        `  ${this.name}: time to the next token after the cut ${toNextToken.toFixed(0)} ms, longest pause between tokens ${gap.toFixed(0)} ms (the model's interval is ${TOKEN_INTERVAL_MS} ms)`,
      );
      if (gap > 2 * TOKEN_INTERVAL_MS + 250)
        throw new Error(`The retry took ${gap.toFixed(0)} ms to resume the stream`);
      h.record(
        { key, path: '/v1/chat/completions', body, auth: h.auth, messageId: id, tokens },
        this.name,
      );
      return { scriptedFailures: 0 };
    },
  };
}
