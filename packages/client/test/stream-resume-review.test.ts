/**
 * Review tests of stream resumption against a real @idem/http handler (memory store): ids
 * that repeat, events without ids, comment and retry lines, CRLF line ends.
 */
import { withIdempotency } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { resumableResponse } from '../src/stream-resume.js';

const encoder = new TextEncoder();

/** The first answer's body breaks after `cut` bytes; resumes go to the real handler. */
async function resumeThrough(events: string[], cut: number): Promise<string> {
  const full = encoder.encode(events.join(''));
  const handle = withIdempotency(
    async () => new Response(full, { headers: { 'content-type': 'text/event-stream' } }),
    { store: createMemoryStore(), scope: 'global', onWarning: () => {} },
  );
  const post = (headers: Record<string, string> = {}) =>
    handle(
      new Request('http://localhost/s', {
        method: 'POST',
        headers: { 'idempotency-key': 'k', ...headers },
        body: '{}',
      }),
    );
  const first = await post();
  await first.arrayBuffer();
  // The first answer as the client saw it: the bytes up to the cut, then a broken connection.
  let sent = false;
  const broken = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent) return controller.error(new Error('connection reset'));
      sent = true;
      controller.enqueue(full.slice(0, cut));
    },
  });
  const response = resumableResponse(
    new Response(broken, { headers: first.headers }),
    (lastEventId, generation) =>
      post({
        'last-event-id': lastEventId ?? '',
        ...(generation ? { 'idempotent-generation': generation } : {}),
      }),
    3,
  );
  return response.text();
}

const cutAfter = (events: string[], count: number) =>
  encoder.encode(events.slice(0, count).join('')).length;

describe('resumeStreams against @idem/http: exact bytes', () => {
  it('ids that repeat (one id per message, several events each): no event twice', async () => {
    const events = [
      'id: m1\ndata: a\n\n',
      'id: m1\ndata: b\n\n',
      'id: m2\ndata: c\n\n',
      'id: m2\ndata: d\n\n',
    ];
    expect(await resumeThrough(events, cutAfter(events, 2))).toBe(events.join(''));
    expect(await resumeThrough(events, cutAfter(events, 2) + 3)).toBe(events.join(''));
  });

  it('ids that come back later (a, b, a): no event twice', async () => {
    const events = [
      'id: a\ndata: 1\n\n',
      'id: b\ndata: 2\n\n',
      'id: a\ndata: 3\n\n',
      'id: c\ndata: 4\n\n',
    ];
    expect(await resumeThrough(events, cutAfter(events, 3) + 2)).toBe(events.join(''));
  });

  it('events without ids, comments, retry fields, CRLF and CR line ends resume exactly', async () => {
    const events = [
      ': hello\r\nretry: 100\r\n\r\n',
      'id: 1\r\ndata: x\r\n\r\n',
      'data: no id\r\r',
      ':comment\n',
      'id: 2\ndata: é\n\n',
      'data: tail\n\n',
    ];
    const whole = events.join('');
    for (let cut = 1; cut < encoder.encode(whole).length; cut += 3)
      expect(await resumeThrough(events, cut)).toBe(whole);
  });

  it('ids with spaces around them (HTTP trims the header): resumed, not refused', async () => {
    const events = ['id:  a \ndata: 1\n\n', 'id: \tb\t\ndata: 2\n\n', 'id: c\ndata: 3\n\n'];
    expect(await resumeThrough(events, cutAfter(events, 2) + 1)).toBe(events.join(''));
  });

  it('an empty id (`id:` resets it) last before the cut: the whole stream is asked for and skipped', async () => {
    const events = ['id: 1\ndata: 1\n\n', 'id:\ndata: 2\n\n', 'data: 3\n\n'];
    expect(await resumeThrough(events, cutAfter(events, 2) + 1)).toBe(events.join(''));
  });
});
