import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, getIdempotencyInfo } from '../src/index.js';
import { type Fault, startFaultServer } from './support/fault-server.js';
import { recordingSleep } from './support/harness.js';
import { idempotent } from './support/idempotent-app.js';

interface ChatBody {
  model: string;
  messages: { role: string; content: string }[];
  stream?: boolean;
}

/** A loopback /v1/chat/completions that counts executions, behind the idempotency layer. */
function chatCompletions() {
  let executions = 0;
  let completionId = 0;
  const handler = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    if (url.pathname !== '/v1/chat/completions') return new Response('not found', { status: 404 });
    const body = (await request.json()) as ChatBody;
    executions++;
    const id = `chatcmpl-${++completionId}`;
    const content = `echo: ${body.messages.at(-1)?.content ?? ''}`;
    if (body.stream) {
      const chunk = (delta: object, finish: string | null) =>
        `data: ${JSON.stringify({
          id,
          object: 'chat.completion.chunk',
          created: 1_764_288_000,
          model: body.model,
          choices: [{ index: 0, delta, finish_reason: finish }],
        })}\n\n`;
      const sse = [
        chunk({ role: 'assistant', content: 'echo: ' }, null),
        chunk({ content: body.messages.at(-1)?.content ?? '' }, null),
        chunk({}, 'stop'),
        'data: [DONE]\n\n',
      ].join('');
      return new Response(sse, { status: 200, headers: { 'content-type': 'text/event-stream' } });
    }
    return Response.json({
      id,
      object: 'chat.completion',
      created: 1_764_288_000,
      model: body.model,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content, refusal: null },
          finish_reason: 'stop',
          logprobs: null,
        },
      ],
      usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
    });
  };
  return { handler, executions: () => executions };
}

async function setup(plan: (Fault | undefined)[]) {
  const app = chatCompletions();
  const server = await startFaultServer({
    handler: idempotent(app.handler),
    fault: (request) => plan[request.n - 1],
  });
  const attempts: { attempt: number; status?: number; failure?: string }[] = [];
  const idemFetch = createIdempotentFetch({
    sleep: recordingSleep().sleep,
    onAttempt: (e) => attempts.push({ attempt: e.attempt, status: e.status, failure: e.failure }),
  });
  const client = new OpenAI({
    baseURL: `${server.url}/v1`,
    apiKey: 'test',
    fetch: idemFetch,
    maxRetries: 0,
  });
  return { app, server, client, attempts };
}

describe('the openai SDK with createIdempotentFetch as its fetch', () => {
  it('makes one chat completion through a dropped response, a 500 and a 429: one execution', async () => {
    const { app, server, client, attempts } = await setup([
      { kind: 'drop-after' },
      { kind: 'status', status: 500 },
      { kind: 'status', status: 429, headers: { 'retry-after': '1' } },
    ]);
    try {
      const { data, response } = await client.chat.completions
        .create({ model: 'gpt-test', messages: [{ role: 'user', content: 'hello' }] })
        .withResponse();
      expect(data.choices[0]?.message.content).toBe('echo: hello');
      // The replay carries the completion the first (lost) execution produced.
      expect(data.id).toBe('chatcmpl-1');
      expect(app.executions()).toBe(1);
      expect(server.seen).toHaveLength(4);
      expect(new Set(server.seen.map((s) => s.key)).size).toBe(1);
      expect(server.seen[0]?.key).toBeTruthy();
      expect(getIdempotencyInfo(response)).toMatchObject({ attempts: 4, replayed: true });
      expect(attempts.map((a) => a.failure ?? a.status)).toEqual([
        'network',
        'status',
        'status',
        200,
      ]);
    } finally {
      await server.close();
    }
  });

  it('streams a chat completion whose first response was lost: the replay streams the same events', async () => {
    const { app, server, client } = await setup([{ kind: 'drop-after' }]);
    try {
      const stream = await client.chat.completions.create({
        model: 'gpt-test',
        messages: [{ role: 'user', content: 'stream me' }],
        stream: true,
      });
      let text = '';
      const ids = new Set<string>();
      for await (const chunk of stream) {
        ids.add(chunk.id);
        text += chunk.choices[0]?.delta.content ?? '';
      }
      expect(text).toBe('echo: stream me');
      expect([...ids]).toEqual(['chatcmpl-1']);
      expect(app.executions()).toBe(1);
      expect(server.seen).toHaveLength(2);
    } finally {
      await server.close();
    }
  });

  it('surfaces a 400 to the SDK at once, as its BadRequestError', async () => {
    const { app, server, client } = await setup([
      {
        kind: 'status',
        status: 400,
        headers: { 'content-type': 'application/json' },
        body: '{"error":{"message":"bad"}}',
      },
    ]);
    try {
      await expect(
        client.chat.completions.create({
          model: 'gpt-test',
          messages: [{ role: 'user', content: 'x' }],
        }),
      ).rejects.toBeInstanceOf(OpenAI.BadRequestError);
      expect(server.seen).toHaveLength(1);
      expect(app.executions()).toBe(0);
    } finally {
      await server.close();
    }
  });
});
