import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BodyTap } from '../src/body-tap.js';

// F16 of the express/fastify mutation audit: `abandoned()` in the body tap could be made to
// answer false with every HTTP/2 test still passing (the plugin's `RequestOverError` guard
// sees such a request first there). These pin the tap's own claim, on the end Node's HTTP/2
// compatibility layer pushes for a stream reset before END_STREAM: `aborted` set, then the
// same `push(null)` as a whole body. The copy so far is not the body and must never be
// handed out as one (it would be fingerprinted and executed as the request).

/** A request stream as Node's HTTP/2 compatibility layer makes one (`aborted`, `stream`). */
function http2Like(): Readable & {
  aborted: boolean;
  stream: { aborted: boolean; rstCode?: number };
} {
  const raw = new Readable({ read() {} }) as Readable & {
    aborted: boolean;
    stream: { aborted: boolean; rstCode?: number };
  };
  raw.aborted = false;
  raw.stream = { aborted: false };
  return raw;
}

function tapOf(raw: Readable): BodyTap {
  const tap = BodyTap.start(raw, 1024);
  if (!(tap instanceof BodyTap)) throw new Error(`no tap: ${String(tap)}`);
  return tap;
}

describe('the body tap on a request its client abandoned (HTTP/2 reset before END_STREAM)', () => {
  it('a whole body (no reset) is the copy: the control', async () => {
    const raw = http2Like();
    const tap = tapOf(raw);
    raw.push(Buffer.from('{"amount":1'));
    raw.push(Buffer.from('00}'));
    raw.push(null);
    expect(tap.settled()).toBe(true);
    expect(Buffer.from((await tap.whole(1_000)) as Uint8Array).toString()).toBe('{"amount":100}');
  });

  for (const [name, abandon] of [
    [
      'the request says aborted',
      (r: ReturnType<typeof http2Like>) => {
        r.aborted = true;
      },
    ],
    [
      'its stream says aborted',
      (r: ReturnType<typeof http2Like>) => {
        r.stream.aborted = true;
      },
    ],
    [
      'its stream has a reset code',
      (r: ReturnType<typeof http2Like>) => {
        r.stream.rstCode = 8;
      },
    ],
  ] as const) {
    it(`${name}: the end pushed after it is not a whole body; the copy is never handed out`, async () => {
      const raw = http2Like();
      const tap = tapOf(raw);
      raw.push(Buffer.from('{"amount":1'));
      abandon(raw);
      raw.push(null);
      expect(tap.settled()).toBe(false);
      expect(tap.take()).toBeUndefined();
      await expect(tap.whole(1_000)).rejects.toThrow(/went away/);
    });
  }
});
