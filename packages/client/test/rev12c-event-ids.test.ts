// rev12c (adversarial review of 94a3db0): event ids sent back as UTF-8 in Last-Event-ID, on a
// loopback node:http server behind @idem/http (the same harness as rev10-stream-ids). Findings
// are `it.fails` (they state the correct behaviour); attacks that held are plain `it`.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { withIdempotency } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';
import { resumableResponse } from '../src/stream-resume.js';

interface Harness {
  url: string;
  executions: () => number;
  lastEventIds: (string | undefined)[];
  /** `Idempotent-Last-Event-ID-Encoding` of each request (the client marks UTF-8 past ASCII). */
  encodings: (string | undefined)[];
  close(): Promise<void>;
}

/**
 * An SSE endpoint behind @idem/http; the first response's connection is cut after `cutAfter`
 * bytes (an array: the n-th 200 response's after `cutAfter[n]` bytes, a resume's too).
 */
async function startRaw(events: Uint8Array[], cutAfter: number | number[]): Promise<Harness> {
  const cuts = typeof cutAfter === 'number' ? [cutAfter] : cutAfter;
  let answered = 0;
  let executions = 0;
  const handle = withIdempotency(
    async () => {
      executions++;
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (n > 0) await new Promise((resolve) => setTimeout(resolve, 20));
          controller.enqueue(events[n++] as Uint8Array);
          if (n === events.length) controller.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    },
    { store: createMemoryStore(), scope: 'global', onWarning: () => {} },
  );
  const lastEventIds: (string | undefined)[] = [];
  const encodings: (string | undefined)[] = [];
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers))
      if (typeof value === 'string') headers.set(name, value);
    lastEventIds.push(headers.get('last-event-id') ?? undefined);
    encodings.push(headers.get('idempotent-last-event-id-encoding') ?? undefined);
    const response = await handle(
      new Request(`http://127.0.0.1${req.url}`, {
        method: req.method,
        headers,
        body: Buffer.concat(chunks),
      }),
    );
    res.writeHead(response.status, Object.fromEntries(response.headers));
    const cut = response.status === 200 ? cuts[answered++] : undefined;
    let sent = 0;
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    for (;;) {
      const read = await reader.read();
      if (read.done) break;
      if (cut !== undefined && sent + read.value.length > cut) {
        res.write(read.value.subarray(0, cut - sent));
        await new Promise((resolve) => setTimeout(resolve, 20));
        res.socket?.destroy();
        await reader.cancel();
        return;
      }
      sent += read.value.length;
      res.write(read.value);
    }
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    executions: () => executions,
    lastEventIds,
    encodings,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const harnesses: Harness[] = [];
afterEach(async () => {
  for (const harness of harnesses.splice(0)) await harness.close();
});

/** The header value as the server reads it: the id's UTF-8 bytes, one Latin-1 character each. */
const wire = (id: string) => Buffer.from(id, 'utf8').toString('latin1');

/** The first response cut 5 bytes into event `cutEvents`; the resumes' after `resumeCuts` bytes. */
async function readRawThroughCut(raw: Buffer[], cutEvents: number, resumeCuts: number[] = []) {
  const harness = await startRaw(
    raw.map((b) => new Uint8Array(b)),
    [raw.slice(0, cutEvents).reduce((sum, b) => sum + b.length, 0) + 5, ...resumeCuts],
  );
  harnesses.push(harness);
  const started = performance.now();
  const response = await createIdempotentFetch({ initialDelayMs: 10, maxDelayMs: 20 })(
    `${harness.url}/v1/stream`,
    { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' },
  );
  const outcome = await response.arrayBuffer().then(
    (bytes) => ({ bytes: Buffer.from(bytes), error: undefined }),
    (error: unknown) => ({ bytes: undefined, error }),
  );
  return { ...outcome, harness, ms: performance.now() - started };
}

describe('rev12c client: ids that are hard to send back', () => {
  // FIXED (was FINDING LOW; the resume starts after the last event whose id can be sent, or
  // from the start, and skips what was delivered): an SSE id with a C0 control character or DEL (the SSE grammar allows any character but NUL, CR, LF; 'id: a\x01b') cannot be sent back: Node's fetch (undici) refuses the header value ("invalid last-event-id header", a TypeError the resume takes as a network error and retries), and node:http servers refuse such bytes too (400). The body errors with STREAM_NOT_RESUMABLE where the stream could be resumed. Fix: when lastEventIdHeader(id) holds a byte outside HTAB / 0x20-0x7E / 0x80-0xFF, resume with an empty Last-Event-ID (the whole stream, generation-checked) and skip all that was delivered — the path resumableResponse already has for "no id seen yet".
  it('a stream whose ids hold a control character (\\x01) or DEL resumes exactly, one execution', async () => {
    const raw = ['a\u0001-1', 'b\u0001-2', 'c\u007f-3', 'd-4', 'e-5'].map((id, n) =>
      Buffer.from(`id: ${id}\ndata: ${n}\n\n`),
    );
    const { bytes, error, harness, ms } = await readRawThroughCut(raw, 3);
    expect(ms).toBeLessThan(5_000);
    expect(harness.executions()).toBe(1);
    expect(error).toBeUndefined();
    expect(bytes?.toString('latin1')).toBe(Buffer.concat(raw).toString('latin1'));
  });

  // Was "held (bounded): ... the body errors with STREAM_NOT_RESUMABLE quickly": the failure
  // mode of the finding above, which is fixed; still bounded, and now exact.
  it('held (bounded): with a control-character id last, the resume starts after the last id that can be sent ("b-2"), exact, nothing run again', async () => {
    const raw = ['a-1', 'b-2', 'c\u0001-3', 'd-4', 'e-5'].map((id, n) =>
      Buffer.from(`id: ${id}\ndata: ${n}\n\n`),
    );
    const { bytes, error, harness, ms } = await readRawThroughCut(raw, 3);
    expect(ms).toBeLessThan(5_000);
    expect(error).toBeUndefined();
    expect(bytes?.toString('latin1')).toBe(Buffer.concat(raw).toString('latin1'));
    expect(harness.lastEventIds).toEqual([undefined, 'b-2']);
    expect(harness.executions()).toBe(1);
  });

  it('held: two ids of different invalid bytes (\\xff-1, \\xfe-1: both U+FFFD-1) — a cut after the second resumes exactly', async () => {
    const ids = [[0xff], [0x61], [0xfe], [0x62], [0x63]];
    const raw = ids.map((id, n) =>
      Buffer.concat([Buffer.from('id: '), Buffer.from(id), Buffer.from(`-1\ndata: ${n}\n\n`)]),
    );
    const { bytes, error, harness } = await readRawThroughCut(raw, 3);
    expect(error).toBeUndefined();
    expect(bytes?.toString('latin1')).toBe(Buffer.concat(raw).toString('latin1'));
    expect(harness.executions()).toBe(1);
    expect(harness.lastEventIds).toEqual([undefined, wire('\ufffd-1')]);
  });

  it('held: "Ã©" and "é" in one stream — a cut after "Ã©" resumes after it, not after "é"', async () => {
    const raw = ['é', 'mid', 'Ã©', 'x', 'y'].map((id, n) =>
      Buffer.from(`id: ${id}\ndata: ${n}\n\n`),
    );
    const { bytes, error, harness } = await readRawThroughCut(raw, 3);
    expect(error).toBeUndefined();
    expect(bytes?.toString('utf8')).toBe(Buffer.concat(raw).toString('utf8'));
    expect(harness.executions()).toBe(1);
    expect(harness.lastEventIds).toEqual([undefined, wire('Ã©')]);
  });

  it('held: a 1020-byte CJK id (the longest id line the scanner reads) and a BOM-led id resume exactly', async () => {
    for (const id of ['事'.repeat(340), '\ufeffbom', ' spaced\t']) {
      const raw = [`${id}-a`, 'p', `${id}`, 'q', 'r'].map((x, n) =>
        Buffer.from(`id: ${x}\ndata: ${n}\n\n`),
      );
      const { bytes, error, harness } = await readRawThroughCut(raw, 3);
      expect(error, JSON.stringify(id.slice(0, 8))).toBeUndefined();
      expect(bytes?.toString('utf8')).toBe(Buffer.concat(raw).toString('utf8'));
      expect(harness.executions()).toBe(1);
    }
  });
});

describe('rev12c client: ids the SSE grammar drops or the scanner does not read', () => {
  it('held: an id with a NUL (dropped: the last id stays the one before) resumes exactly', async () => {
    const raw = ['ok-1', 'ok-2', 'bad\u0000-3', 'd-4', 'e-5'].map((id, n) =>
      Buffer.from(`id: ${id}\ndata: ${n}\n\n`),
    );
    const { bytes, error, harness } = await readRawThroughCut(raw, 3);
    expect(error).toBeUndefined();
    expect(bytes?.toString('latin1')).toBe(Buffer.concat(raw).toString('latin1'));
    expect(harness.executions()).toBe(1);
    expect(harness.lastEventIds).toEqual([undefined, 'ok-2']);
  });

  it('held: an id line past 1024 bytes (2 KB of CJK, not read as an id on either side) resumes exactly', async () => {
    const long = '事'.repeat(700);
    const raw = ['a-1', 'b-2', long, 'd-4', 'e-5'].map((id, n) =>
      Buffer.from(`id: ${id}\ndata: ${n}\n\n`),
    );
    const { bytes, error, harness } = await readRawThroughCut(raw, 3);
    expect(error).toBeUndefined();
    expect(bytes?.toString('utf8')).toBe(Buffer.concat(raw).toString('utf8'));
    expect(harness.executions()).toBe(1);
    expect(harness.lastEventIds).toEqual([undefined, 'b-2']);
  });
});

describe('rev12c: version skew, a client before 94a3db0 against this @idem/http', () => {
  // FIXED (was FINDING LOW; @idem/http refuses an unmarked value whose Latin-1 reading names an
  // event too, 412, and this client marks its UTF-8): an old client (Last-Event-ID as the id's Latin-1 bytes) resuming after the id 'Ã©' sends C3 A9, which this server reads as 'é'. With an event 'é' in the stream the server answers 200 with the rest after THAT event, and the old client splices it after its own 'Ã©' (skipping by its offsets): the reader gets a corrupted stream with no error, where the changeset says a mixed pair answers 412. Fix (server): when a non-ASCII value's Latin-1 reading names an event of the stream too (and differs from the UTF-8 reading), answer 412; or (both) mark UTF-8 ids with a request header and read unmarked values as Latin-1.
  it('an old-style resume after "Ã©" gives the exact stream or an error, never a spliced one', async () => {
    const raw = ['é', 'mid', 'Ã©', 'x', 'y'].map((id, n) =>
      Buffer.from(`id: ${id}\ndata: ${n}\n\n`),
    );
    const whole = Buffer.concat(raw).toString('utf8');
    const harness = await startRaw(
      raw.map((b) => new Uint8Array(b)),
      raw.slice(0, 3).reduce((sum, b) => sum + b.length, 0) + 5,
    );
    harnesses.push(harness);
    const init = {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'skew-1' },
      body: '{}',
    };
    const first = await fetch(`${harness.url}/v1/stream`, init);
    // The resume as the client before 94a3db0 sent it: the id as it is (Latin-1 bytes).
    const old = resumableResponse(
      first,
      (lastEventId, generation) => {
        const headers = new Headers(init.headers);
        headers.set('last-event-id', lastEventId ?? '');
        if (generation !== null) headers.set('idempotent-generation', generation);
        return fetch(`${harness.url}/v1/stream`, { ...init, headers });
      },
      2,
    );
    const text = await old.text().catch((error: unknown) => error);
    expect(harness.lastEventIds).toEqual([undefined, 'Ã©']);
    expect(harness.executions()).toBe(1);
    // Correct: the whole stream, or an error (412 -> STREAM_NOT_RESUMABLE).
    expect(text === whole || text instanceof Error).toBe(true);
  });
});

describe('stream21: resumes after ids that cannot be sent, and the UTF-8 marker', () => {
  const events = (ids: string[]) => ids.map((id, n) => Buffer.from(`id: ${id}\ndata: ${n}\n\n`));

  it('an id past ASCII goes marked (Idempotent-Last-Event-ID-Encoding: utf-8), an ASCII one unmarked', async () => {
    const ascii = await readRawThroughCut(events(['a-1', 'b-2', 'c-3', 'd-4']), 2);
    expect(ascii.error).toBeUndefined();
    expect(ascii.harness.lastEventIds).toEqual([undefined, 'b-2']);
    expect(ascii.harness.encodings).toEqual([undefined, undefined]);
    const wide = await readRawThroughCut(events(['a-1', '事件-2', 'c-3', 'd-4']), 2);
    expect(wide.error).toBeUndefined();
    expect(wide.harness.lastEventIds).toEqual([undefined, wire('事件-2')]);
    expect(wide.harness.encodings).toEqual([undefined, 'utf-8']);
  });

  it('"é" and "Ã©" in one stream, cut after "é": the marked resume is exact (unmarked, the server could not tell it from an old client\'s "Ã©")', async () => {
    const raw = events(['m', 'é', 'Ã©', 'x', 'y']);
    const { bytes, error, harness } = await readRawThroughCut(raw, 2);
    expect(error).toBeUndefined();
    expect(bytes?.toString('utf8')).toBe(Buffer.concat(raw).toString('utf8'));
    expect(harness.lastEventIds).toEqual([undefined, wire('é')]);
    expect(harness.encodings).toEqual([undefined, 'utf-8']);
    expect(harness.executions()).toBe(1);
  });

  it('C1 controls (U+0085, U+009F) are no control bytes on the wire: resumed after, marked, exact', async () => {
    const raw = events(['a', '\u0085-1', 'b\u009f', 'x', 'y']);
    const { bytes, error, harness } = await readRawThroughCut(raw, 3);
    expect(error).toBeUndefined();
    expect(bytes?.toString('utf8')).toBe(Buffer.concat(raw).toString('utf8'));
    expect(harness.lastEventIds).toEqual([undefined, wire('b\u009f')]);
    expect(harness.executions()).toBe(1);
  });

  it('a repeated id, then ids with controls: the resume names the repeated id and the server starts after its FIRST event; exact', async () => {
    const raw = events(['x', 'y\u0001', 'x', 'z\u0002', 'w', 'v']);
    const { bytes, error, harness } = await readRawThroughCut(raw, 4);
    expect(error).toBeUndefined();
    expect(bytes?.toString('latin1')).toBe(Buffer.concat(raw).toString('latin1'));
    expect(harness.lastEventIds).toEqual([undefined, 'x']);
    expect(harness.executions()).toBe(1);
  });

  it('an `id:` reset (empty) after a sendable id, then a control id: the whole stream is asked for and what was read is skipped', async () => {
    const raw = events(['a', '', 'c\u007f', 'd', 'e']);
    const { bytes, error, harness } = await readRawThroughCut(raw, 3);
    expect(error).toBeUndefined();
    expect(bytes?.toString('latin1')).toBe(Buffer.concat(raw).toString('latin1'));
    expect(harness.lastEventIds).toEqual([undefined, '']);
    expect(harness.executions()).toBe(1);
  });

  it('ids of spaces and tabs only (a header trims them: empty) and a control id: the whole stream, exact', async () => {
    const raw = events([' \t ', 'q\u0003', 'r', 's']);
    const { bytes, error, harness } = await readRawThroughCut(raw, 2);
    expect(error).toBeUndefined();
    expect(bytes?.toString('latin1')).toBe(Buffer.concat(raw).toString('latin1'));
    expect(harness.lastEventIds).toEqual([undefined, '']);
    expect(harness.executions()).toBe(1);
  });

  it('disconnects mid-resume: the whole-stream resume (control ids) is cut inside what was already read, then past it; a third answer finishes it exactly', async () => {
    const raw = events(['a\u0001', 'b\u0001', 'c\u0001', 'd\u0001', 'e', 'f']);
    const firstCut = raw.slice(0, 3).reduce((sum, b) => sum + b.length, 0) + 5;
    // The first resume (the whole stream) is cut before the client's position, the second
    // one (the whole stream again: still no id to send) 10 bytes past it.
    const { bytes, error, harness } = await readRawThroughCut(raw, 3, [
      firstCut - 20,
      firstCut + 10,
    ]);
    expect(error).toBeUndefined();
    expect(bytes?.toString('latin1')).toBe(Buffer.concat(raw).toString('latin1'));
    expect(harness.lastEventIds.filter((id) => id !== undefined)).toEqual(['', '', '']);
    expect(harness.executions()).toBe(1);
  });

  it('disconnect mid-resume after a sendable id appeared in the resumed part: the next resume names it', async () => {
    const raw = events(['a\u0001', 'b\u0001', 'c-3', 'd-4', 'e-5', 'f-6']);
    // First cut inside 'b', so the resume (whole stream) delivers 'c-3' before it is cut.
    const firstCut = raw.slice(0, 1).reduce((sum, b) => sum + b.length, 0) + 5;
    const throughC = raw.slice(0, 3).reduce((sum, b) => sum + b.length, 0) + 3;
    const { bytes, error, harness } = await readRawThroughCut(raw, 1, [throughC]);
    expect(firstCut).toBeLessThan(throughC);
    expect(error).toBeUndefined();
    expect(bytes?.toString('latin1')).toBe(Buffer.concat(raw).toString('latin1'));
    expect(harness.lastEventIds.filter((id) => id !== undefined)).toEqual(['', 'c-3']);
    expect(harness.executions()).toBe(1);
  });
});
