// Fakes of nats.js 2.x's pull consumer for the JetStream stop() tests that need no broker.
import type { JsMsgLike } from '../src/index.js';

/** A JetStream message whose `nak`s are recorded in `naks` as `[seq, delay]`. */
export function message(seq: number, naks: Array<[number, number | undefined]>): JsMsgLike {
  return {
    data: new TextEncoder().encode(`{"n":${seq}}`),
    seq,
    info: { stream: 'S', consumer: 'w', streamSequence: seq, redeliveryCount: 1 },
    ack() {},
    nak(millis?: number) {
      naks.push([seq, millis]);
    },
    working() {},
    term() {},
  };
}

/**
 * The `messages` of a pull consumer shaped like nats.js 2.x's (`sub` is its inbox
 * subscription): it yields what `push` gave it and ends when `end()` or `stop()` is called.
 */
export function fakeMessages(sub: unknown) {
  const queued: JsMsgLike[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  const calls = { stop: 0 };
  const end = () => {
    ended = true;
    wake?.();
  };
  const messages = {
    sub,
    stop() {
      calls.stop += 1;
      end();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (queued.length > 0) yield queued.shift() as JsMsgLike;
        if (ended) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    },
  };
  const push = (m: JsMsgLike) => {
    queued.push(m);
    wake?.();
  };
  return { messages, calls, push, end };
}
