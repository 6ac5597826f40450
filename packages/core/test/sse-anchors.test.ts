import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lastEventIdForm, SseAnchors } from '../src/index.js';

const encoder = new TextEncoder();

function anchorsOf(bytes: Uint8Array, cuts: number[]): { id: string; end: number }[] {
  const scanner = new SseAnchors();
  const found: { id: string; end: number }[] = [];
  let at = 0;
  for (const cut of [
    ...cuts.filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b),
    bytes.length,
  ]) {
    scanner.push(bytes.subarray(at, cut), (id, end) => {
      found.push({ id, end });
      return false;
    });
    at = cut;
  }
  return found;
}

describe('SseAnchors', () => {
  it('finds the end of every event that carries an id, with LF, CRLF and CR line ends (after the CR of a CRLF)', () => {
    for (const eol of ['\n', '\r\n', '\r']) {
      const events = [
        `id: 1${eol}data: a${eol}${eol}`,
        `data: no id${eol}${eol}`,
        `id:2${eol}data: b${eol}${eol}`,
      ];
      const text = events.join('');
      const bytes = encoder.encode(text);
      // The anchor follows the byte that ends the blank line: the LF of a CRLF comes after it.
      const lf = eol === '\r\n' ? 1 : 0;
      expect(anchorsOf(bytes, [])).toEqual([
        { id: '1', end: encoder.encode(events[0] as string).length - lf },
        { id: '2', end: bytes.length - lf },
      ]);
    }
  });

  it('puts every anchor at the same offset however the bytes are cut into chunks', () => {
    const line = fc.constantFrom('\n', '\r\n', '\r');
    const event = fc.record({
      id: fc.option(fc.integer({ min: 0, max: 999 }).map(String), { nil: undefined }),
      data: fc.string({ maxLength: 20 }).map((s) => s.replace(/[\r\n]/g, ' ')),
      eol: line,
      comment: fc.boolean(),
    });
    fc.assert(
      fc.property(
        fc.array(event, { maxLength: 8 }),
        fc.array(fc.nat(400), { maxLength: 10 }),
        (events, cuts) => {
          const text = events
            .map(
              ({ id, data, eol, comment }) =>
                `${comment ? `: keep-alive${eol}` : ''}${id === undefined ? '' : `id: ${id}${eol}`}data: ${data}${eol}${eol}`,
            )
            .join('');
          const bytes = encoder.encode(text);
          expect(anchorsOf(bytes, cuts)).toEqual(anchorsOf(bytes, []));
          // Cut at every byte, the worst case.
          expect(
            anchorsOf(
              bytes,
              Array.from({ length: bytes.length }, (_, i) => i),
            ),
          ).toEqual(anchorsOf(bytes, []));
        },
      ),
      { numRuns: process.env.CI ? 100 : 300 },
    );
  });

  it('stops right after the anchor asked for, so the rest of the chunk can be sent', () => {
    const bytes = encoder.encode('id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n');
    const scanner = new SseAnchors();
    const scanned = scanner.push(bytes, (id) => id === '2');
    expect(new TextDecoder().decode(bytes.subarray(scanned))).toBe('id: 3\ndata: c\n\n');
  });
});

describe('lastEventIdForm', () => {
  // The form was `/^[ \t]+|[ \t]+$/g`, which backtracks over every run of spaces not at the end:
  // 64 K spaces between two characters took about 2 s of CPU, 400 K about a minute.
  it('strips spaces and tabs at both ends in linear time', () => {
    const id = ` \ta${' \t'.repeat(200_000)}b\t `;
    const started = process.cpuUsage();
    const form = lastEventIdForm(id);
    const used = process.cpuUsage(started);
    expect(form).toBe(id.slice(2, -2));
    expect((used.user + used.system) / 1000).toBeLessThan(2_000);
  });

  it('gives what the regular expression gave', () => {
    const text = fc.string({
      unit: fc.constantFrom(' ', '\t', 'a', '\u00a0', '\n', 'é'),
      maxLength: 24,
    });
    fc.assert(
      fc.property(text, (id) => {
        expect(lastEventIdForm(id)).toBe(id.replace(/^[ \t]+|[ \t]+$/g, ''));
      }),
      { numRuns: 500 },
    );
  });
});
