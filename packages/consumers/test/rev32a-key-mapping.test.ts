// rev32a: JetStream's default key is one to one: no two messages of a stream (the default
// scope is ['nats', stream, consumer]) share a key, nor two of streams a wider scope spans.
// The marked keys were `Nats-Msg-Id:<id>`, and a stream whose name starts with `Nats-Msg-Id:`
// (a colon is allowed in a stream name; nats-server 2.9.10 takes `Nats-Msg-Id:a`) had fallback
// keys spelled like them: in stream `Nats-Msg-Id:a`, the message with id `a:1:1` and the
// message without one at sequence 1, stored at 1 ns, were both `Nats-Msg-Id:a:1:1`. The mark
// is now `Nats-Msg-Id.`: no stream name holds a `.`, so no fallback key starts with it.
// Checked over every stream name, id and sequence written with a small alphabet of the
// pieces that matter (exhaustively: fast-check is not a dependency of this package).
import { describe, expect, it } from 'vitest';
import { type JsMsgLike, jetStreamMessageKey } from '../src/index.js';
import { spelled } from './spelled.js';

const message = (stream: string, seq: number, timestampNanos: number, id?: string): JsMsgLike =>
  ({
    data: new Uint8Array(),
    seq,
    info: { stream, consumer: 'w', streamSequence: seq, redeliveryCount: 1, timestampNanos },
    headers:
      id === undefined ? undefined : { get: (name: string) => (name === 'Nats-Msg-Id' ? id : '') },
  }) as unknown as JsMsgLike;

const PIECES = ['Nats-Msg-Id', ':', '.', '1', 'a'];
// Stream names hold no '.' (nor whitespace, '*', '>', '/', '\\').
const STREAMS = spelled(PIECES, 3).filter((s) => !s.includes('.'));
const IDS = spelled(PIECES, 5);
const NUMBERS = [1, 11];

/** The keys of every message of `streams`; fails on the first key two messages share. */
function firstShared(streams: string[]): string | undefined {
  const owner = new Map<string, string>();
  const claim = (key: string, who: string) => {
    const had = owner.get(key);
    if (had !== undefined && had !== who) return `${key}: ${had} / ${who}`;
    owner.set(key, who);
    return undefined;
  };
  for (const stream of streams) {
    for (const seq of NUMBERS)
      for (const ts of NUMBERS) {
        const shared = claim(
          jetStreamMessageKey(message(stream, seq, ts)),
          `${stream}#${seq}@${ts}`,
        );
        if (shared) return shared;
      }
    // The same id is the same message (a publisher's resend), in whatever stream.
    for (const id of IDS) {
      const shared = claim(jetStreamMessageKey(message(stream, 1, 1, id)), `id ${id}`);
      if (shared) return shared;
    }
  }
  return undefined;
}

describe('rev32a: the JetStream default key is one to one', () => {
  it('within a stream, whatever its name', () => {
    expect(jetStreamMessageKey(message('Nats-Msg-Id:a', 1, 1, 'a:1:1'))).not.toBe(
      jetStreamMessageKey(message('Nats-Msg-Id:a', 1, 1)),
    );
    for (const stream of STREAMS) expect(firstShared([stream])).toBeUndefined();
  });

  it('across the streams a scope spans (messages with their stored timestamp)', () => {
    expect(firstShared(STREAMS)).toBeUndefined();
  });
});
