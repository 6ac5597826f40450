// amqp32b: a Nats-Msg-Id that is no key string (longer than 255 characters, not printable
// ASCII) was hashed into the key by the processor, unmarked: a publisher sending that digest
// as another message's id got the same key, and one message's outcome answered the other.
// Now the digest is marked (`Nats-Msg-Id.<digest>`), and the mapping stays one to one:
// checked exhaustively over ids built from the pieces that matter, their digests, and those
// digests marked, as literal ids.
import { deriveKey, isValidKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { type JsMsgLike, jetStreamMessageKey } from '../src/index.js';
import { spelled } from './spelled.js';

const message = (stream: string, id?: string): JsMsgLike =>
  ({
    data: new Uint8Array(),
    seq: 1,
    info: { stream, consumer: 'w', streamSequence: 1, redeliveryCount: 1, timestampNanos: 1 },
    headers:
      id === undefined ? undefined : { get: (name: string) => (name === 'Nats-Msg-Id' ? id : '') },
  }) as unknown as JsMsgLike;

/** The key the engine uses: a key string as it is, anything else hashed (the processor's). */
const engineKey = (key: string) => (isValidKey(key) ? key : deriveKey(key));

const MARK = 'Nats-Msg-Id.';
const LONG = 'x'.repeat(250);
const PIECES = ['é', LONG, MARK, ':1', 'a'];

describe('amqp32b: a hashed Nats-Msg-Id never shares a key with a literal one', () => {
  it('the digest of a non-ASCII id, sent as an id, is another key', () => {
    const hashed = engineKey(jetStreamMessageKey(message('S', 'é')));
    const literal = engineKey(jetStreamMessageKey(message('S', deriveKey('é'))));
    expect(hashed).not.toBe(literal);
  });

  it('one to one over ids, their digests and marked digests (exhaustive)', () => {
    for (const stream of ['S', 'a']) {
      const base = spelled(PIECES, 3);
      const ids = new Set(base);
      // Every key a hashed id can have had, sent as a literal id, marked or not.
      for (const id of base) {
        const key = engineKey(jetStreamMessageKey(message(stream, id)));
        ids.add(key);
        ids.add(`${MARK}${key}`);
        ids.add(deriveKey(id));
        ids.add(`${MARK}${deriveKey(id)}`);
      }
      const owner = new Map<string, string>();
      for (const id of ids) {
        const key = engineKey(jetStreamMessageKey(message(stream, id)));
        expect(isValidKey(key)).toBe(true);
        const had = owner.get(key);
        expect(had === undefined ? id : had, `key ${key}`).toBe(id);
        owner.set(key, id);
      }
      // And no id shares a key with the messages without one.
      expect(owner.has(engineKey(jetStreamMessageKey(message(stream))))).toBe(false);
    }
  });
});
