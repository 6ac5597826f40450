import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { PROBLEM_TYPES, REPLAYED_HEADER, withIdempotency } from '../src/index.js';

// README "Live streams": a duplicate attaches only to a response of a live media type
// (`text/event-stream`, `application/x-ndjson` by default); "409 stays for a response that is
// not of a live type (JSON)", whose client must not get a body cut at an arbitrary point
// while it is still produced. Mutation audit (muthttp): the media-type check before
// publishing could be dropped with every other test passing.

const encoder = new TextEncoder();

describe('a streamed JSON response in progress', () => {
  it('is not attached to: the duplicate gets the 409, and the replay once it is stored', async () => {
    let finish: () => void = () => {};
    const finished = new Promise<void>((resolve) => {
      finish = resolve;
    });
    let runs = 0;
    const handler = withIdempotency(
      async () => {
        runs++;
        const body = new ReadableStream<Uint8Array>({
          async start(controller) {
            controller.enqueue(encoder.encode('{"items":['));
            await finished;
            controller.enqueue(encoder.encode('1,2]}'));
            controller.close();
          },
        });
        return new Response(body, { headers: { 'content-type': 'application/json' } });
      },
      { store: createMemoryStore(), scope: 'global' },
    );
    const send = () =>
      handler(
        new Request('http://api.test/list', {
          method: 'POST',
          headers: { 'idempotency-key': 'j-1' },
          body: 'x',
        }),
      );
    const first = await send();
    expect(first.status).toBe(200);
    const firstBody = first.text();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const duplicate = await send();
    expect(duplicate.status).toBe(409);
    expect(((await duplicate.json()) as { type: string }).type).toBe(PROBLEM_TYPES.inProgress);
    finish();
    expect(await firstBody).toBe('{"items":[1,2]}');
    const replay = await send();
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(await replay.text()).toBe('{"items":[1,2]}');
    expect(runs).toBe(1);
  });
});
