import { createMemoryStore } from '@idem/store-memory';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bodyFromBytes,
  MAX_MULTIPART_HEADER_BYTES,
  MAX_MULTIPART_PARTS,
  MalformedBodyError,
  PROBLEM_TYPES,
  withIdempotency,
} from '../src/index.js';

const encoder = new TextEncoder();
const RUNS = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 50 : 200);

type Part = { headers: string[]; content: Uint8Array };

/** `parts` encoded under `boundary`, with an optional preamble and epilogue. */
function encode(
  boundary: string,
  parts: Part[],
  preamble = '',
  epilogue = '',
): Uint8Array<ArrayBuffer> {
  const chunks: Uint8Array[] = [encoder.encode(preamble ? `${preamble}\r\n` : '')];
  for (const part of parts) {
    chunks.push(
      encoder.encode(`--${boundary}\r\n${part.headers.map((h) => `${h}\r\n`).join('')}\r\n`),
    );
    chunks.push(part.content, encoder.encode('\r\n'));
  }
  chunks.push(encoder.encode(`--${boundary}--${epilogue}`));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

const type = (boundary: string) => `multipart/form-data; boundary=${boundary}`;
const canonical = (bytes: Uint8Array, contentType: string) => {
  const body = bodyFromBytes(bytes, contentType);
  if (body.kind !== 'bytes') throw new Error(`a multipart body read as ${body.kind}`);
  return Buffer.from(body.bytes).toString('hex');
};

const field = (name: string, value: string): Part => ({
  headers: [`Content-Disposition: form-data; name="${name}"`],
  content: encoder.encode(value),
});

// Boundaries as clients draw them (RFC 2046 bchars, no trailing space), never inside a part.
const boundaryArb = fc.stringMatching(/^[0-9A-Za-z'()+_,./:=?-]{1,40}$/);
const partArb = fc.record({
  name: fc.stringMatching(/^[a-z]{1,8}$/),
  content: fc.uint8Array({ maxLength: 64 }),
  file: fc.option(fc.stringMatching(/^[a-z.]{1,8}$/), { nil: undefined }),
});
const toPart = (p: { name: string; content: Uint8Array; file: string | undefined }): Part => ({
  headers: [
    `content-disposition: form-data; name="${p.name}"${p.file ? `; filename="${p.file}"` : ''}`,
    ...(p.file ? ['content-type: application/octet-stream'] : []),
  ],
  content: p.content,
});
const contains = (haystack: Uint8Array, needle: string) =>
  Buffer.from(haystack).includes(Buffer.from(needle));

describe('multipart/form-data fingerprint', () => {
  it('is the same for one form under any two boundaries, preambles and epilogues', () => {
    fc.assert(
      fc.property(fc.array(partArb, { maxLength: 5 }), boundaryArb, boundaryArb, (parts, a, b) => {
        const encoded = parts.map(toPart);
        fc.pre(
          encoded.every((p) => !contains(p.content, `--${a}`) && !contains(p.content, `--${b}`)),
        );
        expect(canonical(encode(a, encoded), type(a))).toBe(
          canonical(
            encode(b, encoded, 'preamble text', '\r\nepilogue'),
            `${type(`"${b}"`)}; charset=utf-8`,
          ),
        );
      }),
      { numRuns: RUNS },
    );
  });

  it('differs for two different forms (parts, order, names, file names, contents)', () => {
    fc.assert(
      fc.property(
        fc.array(partArb, { maxLength: 4 }),
        fc.array(partArb, { maxLength: 4 }),
        (x, y) => {
          const [px, py] = [x.map(toPart), y.map(toPart)];
          fc.pre(
            px.every((p) => !contains(p.content, '--b')) &&
              py.every((p) => !contains(p.content, '--b')),
          );
          const same =
            JSON.stringify(x.map((p) => ({ ...p, content: [...p.content] }))) ===
            JSON.stringify(y.map((p) => ({ ...p, content: [...p.content] })));
          expect(
            canonical(encode('b', px), type('b')) === canonical(encode('b', py), type('b')),
          ).toBe(same);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('tells a part that ends in a line break from one that does not, and header case and order do not matter', () => {
    const withBreak = encode('b', [field('a', '1\r\n')]);
    const without = encode('b', [field('a', '1')]);
    expect(canonical(withBreak, type('b'))).not.toBe(canonical(without, type('b')));
    const spelled = encode('b', [
      {
        headers: ['content-type: text/plain', 'CONTENT-DISPOSITION:   form-data; name="a"'],
        content: encoder.encode('1'),
      },
    ]);
    const other = encode('b', [
      {
        headers: ['Content-Disposition: form-data; name="a"', 'Content-Type: text/plain'],
        content: encoder.encode('1'),
      },
    ]);
    expect(canonical(spelled, type('b'))).toBe(canonical(other, type('b')));
  });

  it('refuses a body without its boundary, its closing line or parseable part headers', () => {
    const good = encode('b', [field('a', '1')]);
    for (const [bytes, contentType] of [
      [good, 'multipart/form-data'],
      [good, type('c')],
      [good, type('x'.repeat(71))],
      [good.subarray(0, good.length - 5), type('b')],
      [encoder.encode('--b\r\nno colon here\r\n\r\n1\r\n--b--'), type('b')],
      [encoder.encode('--b\r\ncontent-disposition: form-data; name="a"\r\n1\r\n--b--'), type('b')],
      [encoder.encode('--bX\r\n\r\n1\r\n--b--'), type('b')],
    ] as const) {
      expect(() => bodyFromBytes(bytes, contentType)).toThrow(MalformedBodyError);
    }
  });

  it('answers 400 malformed-body and 413 past the part caps, storing nothing', async () => {
    let runs = 0;
    const handle = withIdempotency(
      async () => {
        runs += 1;
        return new Response('ok', { status: 201 });
      },
      { store: createMemoryStore(), scope: 'global', maxBodyBytes: 4 * 1024 * 1024 },
    );
    const post = (body: Uint8Array<ArrayBuffer>, contentType: string) =>
      handle(
        new Request('http://x/upload', {
          method: 'POST',
          headers: { 'idempotency-key': crypto.randomUUID(), 'content-type': contentType },
          body,
        }),
      );
    const malformed = await post(encoder.encode('--b\r\n\r\n1'), type('b'));
    expect(malformed.status).toBe(400);
    expect((await malformed.json()).type).toBe(PROBLEM_TYPES.malformedBody);

    const many = encode(
      'b',
      Array.from({ length: MAX_MULTIPART_PARTS + 1 }, (_, i) => field(`f${i}`, '')),
    );
    const tooMany = await post(many, type('b'));
    expect(tooMany.status).toBe(413);
    expect(await tooMany.json()).toMatchObject({
      type: PROBLEM_TYPES.bodyTooLarge,
      detail: expect.stringContaining(`${MAX_MULTIPART_PARTS} parts`),
    });
    const bigHeaders = encode('b', [
      {
        headers: [`x-pad: ${'p'.repeat(MAX_MULTIPART_HEADER_BYTES)}`],
        content: encoder.encode('1'),
      },
    ]);
    expect((await post(bigHeaders, type('b'))).status).toBe(413);

    const atCap = encode(
      'b',
      Array.from({ length: MAX_MULTIPART_PARTS }, (_, i) => field(`f${i}`, '')),
    );
    expect((await post(atCap, type('b'))).status).toBe(201);
    expect(runs).toBe(1);
  });
});
