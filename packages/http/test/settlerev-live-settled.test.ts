/**
 * settlerev review: a published live response (read ahead of its first client, `ahead`) and
 * a response with trailers, settled, then written to, ended and destroyed by the app. Real
 * node:http server on loopback, memory store, in-process live channel. Passes on 07aad06 too.
 */
import { createServer, type ServerResponse } from 'node:http';
import { createMemoryLiveStreams } from '@idem/core';
import { afterEach, describe, expect, it } from 'vitest';
import { GENERATION_HEADER } from '../src/index.js';
import { closeAll, deferred, listenLoopback, recordedHandler } from './support/h2c.js';
import { h1Post as open } from './support/settlerev.js';

afterEach(closeAll);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes, ends and destroys once the held end went out; logs what the app hears. */
async function afterEnd(res: ServerResponse, log: string[]): Promise<void> {
  for (let i = 0; i < 200 && !res.writableFinished; i++) await sleep(10);
  await sleep(20);
  res.write('x', (error) =>
    log.push(`write-after:${error ? (error as { code?: string }).code : 'ok'}`),
  );
  res.end('y', (error?: Error | null) =>
    log.push(`end-after:${error ? (error as { code?: string }).code : 'ok'}`),
  );
  res.destroy();
  await sleep(20);
  log.push('done');
}

describe('settlerev: live and trailer responses after they settled', () => {
  it('a published stream: first client, an attached duplicate and the replay get it whole', async () => {
    const log: string[] = [];
    const attached = deferred();
    const finished = deferred();
    const { handle, runs } = recordedHandler(
      async (_req, res) => {
        res.on('error', (error: { code?: string }) => log.push(`res:error:${error.code}`));
        res.on('close', () => log.push('res:close'));
        res.setHeader('content-type', 'text/event-stream');
        for (let i = 1; i <= 3; i++) {
          log.push(`write:${res.write(`data: ${i}\n\n`)}`);
          await sleep(30);
        }
        await attached.promise;
        for (let i = 4; i <= 6; i++) {
          res.write(`data: ${i}\n\n`);
          await sleep(10);
        }
        res.end('data: end\n\n', () => log.push('end:ok'));
        await afterEnd(res, log);
        finished.resolve();
      },
      { liveStreams: { channel: createMemoryLiveStreams() } },
    );
    const port = await listenLoopback(createServer(handle));
    const whole = `${[1, 2, 3, 4, 5, 6].map((i) => `data: ${i}\n\n`).join('')}data: end\n\n`;
    let firstChunk!: () => void;
    const seen = new Promise<void>((resolve) => {
      firstChunk = resolve;
    });
    const first = open(port, 'live', firstChunk);
    await seen;
    const duplicate = open(port, 'live');
    await sleep(30);
    attached.resolve();
    const [a, b] = await Promise.all([first, duplicate]);
    await finished.promise;
    expect(a.body).toBe(whole);
    expect(b.body).toBe(whole);
    expect(b.headers['idempotent-replayed']).toBe('true');
    // Published: the first response names its generation (read ahead of its client).
    expect(a.headers[GENERATION_HEADER.toLowerCase()]).toBe('1');
    expect((await open(port, 'live')).body).toBe(whole);
    expect(runs()).toBe(1);
    expect(log.slice(0, 3)).toEqual(['write:true', 'write:true', 'write:true']);
    expect(log).toContain('end:ok');
    expect(log).toContain('write-after:ERR_STREAM_WRITE_AFTER_END');
    expect(log.filter((line) => line === 'res:close')).toHaveLength(1);
  });

  it('declared trailers: recorded, sent, replayed; later calls answered by Node', async () => {
    const log: string[] = [];
    const finished = deferred();
    const { handle, runs } = recordedHandler(async (_req, res) => {
      res.on('error', (error: { code?: string }) => log.push(`res:error:${error.code}`));
      res.on('close', () => log.push('res:close'));
      res.setHeader('content-type', 'text/plain');
      res.setHeader('trailer', 'x-checksum');
      res.write('body-');
      res.addTrailers({ 'x-checksum': 'abc' });
      res.end('end', () => log.push('end:ok'));
      await afterEnd(res, log);
      finished.resolve();
    });
    const port = await listenLoopback(createServer(handle));
    const first = await open(port, 'trail');
    await finished.promise;
    expect(first.body).toBe('body-end');
    expect(first.trailers['x-checksum']).toBe('abc');
    const replay = await open(port, 'trail');
    expect(replay.body).toBe('body-end');
    expect(replay.trailers['x-checksum']).toBe('abc');
    expect(runs()).toBe(1);
    expect(log).toContain('end:ok');
    expect(log).toContain('write-after:ERR_STREAM_WRITE_AFTER_END');
    expect(log.filter((line) => line === 'res:close')).toHaveLength(1);
  });
});
