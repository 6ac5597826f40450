/**
 * settlerev review (FINDING, pre-existing at 07aad06): once a record failed and the response
 * was destroyed (`failed`), the writes and ends the app made while the end was held, and every
 * one it makes afterwards, were queued in `late` for ever: never passed to Node, so their
 * callbacks never ran (Node answers a write to a destroyed response with ERR_STREAM_DESTROYED),
 * and each chunk stayed reachable from `res` (a settled recording said it passes every call
 * straight to Node). Real node:http server on loopback, memory store.
 */
import { createServer, type ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { closeAll, deferred, listenLoopback, recordedHandler } from './support/h2c.js';
import { firstCompletionFails, h1Post } from './support/settlerev.js';

afterEach(closeAll);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('settlerev: a response whose record failed answers later writes as Node does', () => {
  it('the queued late write and every later write get their callback (ERR_STREAM_DESTROYED)', async () => {
    const failing = firstCompletionFails();
    const log: string[] = [];
    const done = deferred();
    let kept: ServerResponse | undefined;
    const answer =
      (name: string) =>
      (error?: Error | null): void => {
        log.push(`${name}:${error ? (error as { code?: string }).code : 'ok'}`);
      };
    const { handle } = recordedHandler(
      async (_req, res) => {
        kept = res;
        res.on('error', () => {});
        res.write('a-');
        res.end('end');
        // Queued while the end waits for the record.
        res.write('late', answer('late-write'));
        for (let i = 0; i < 200 && !res.destroyed; i++) await sleep(10);
        for (let i = 0; i < 20; i++) res.write(Buffer.alloc(1024), answer(`after-${i}`));
        await sleep(50);
        done.resolve();
      },
      { store: failing },
    );
    const port = await listenLoopback(createServer(handle));
    await expect(h1Post(port, 'k')).rejects.toThrow();
    await done.promise;
    expect(kept?.destroyed).toBe(true);
    expect(log).toContain('late-write:ERR_STREAM_DESTROYED');
    expect(log.filter((line) => line.endsWith(':ERR_STREAM_DESTROYED'))).toHaveLength(21);
  });
});
