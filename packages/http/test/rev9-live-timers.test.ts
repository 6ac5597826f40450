/**
 * rev9: live-stream durations past Node's longest timer (2^31 - 1 ms). Real store
 * (store-memory), the in-process channel, a real HTTP server on loopback.
 */
import { createMemoryLiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { sseApp } from './live/sse-app.js';
import { openStream } from './live/stream-client.js';
import { serveWeb, type WebServer } from './live/web-server.js';

const servers: WebServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

describe('rev9: liveStreams.blockMs past 2^31 - 1 ms', () => {
  // FINDING (LOW): `liveStreams.blockMs` (and `stallMs`) accept any positive safe integer
  // (live-options.ts `positive`), but are used as `setTimeout` delays (the in-process
  // channel's `next({ waitMs: blockMs })`, attach.ts's stall timer). Past 2^31 - 1 ms Node
  // fires them after 1 ms with a TimeoutOverflowWarning: an attached reader (a duplicate
  // request following a stream in progress) that waits for the next event polls the channel
  // every millisecond, a warning each time, for as long as the stream is idle (a model that
  // thinks for a minute: tens of thousands of turns, per reader); with `stallMs` that large
  // a reader is cut ("the client stopped reading") whenever it takes a chunk more than 1 ms
  // late. Someone who sets them huge wants "never": they get the opposite. Repro: blockMs
  // 2^31, a stream of 3 events 300 ms apart, a duplicate attaches after the first: hundreds
  // of overflow warnings while it waits. Suggested fix: bound them at 2^31 - 1 in
  // `resolveLiveStreams` (INVALID_INPUT past it, as core does for leaseMs/storeTimeoutMs),
  // or cap the timers.
  it('an attached reader waiting for the next event does not poll on overflowed timers', async () => {
    let overflows = 0;
    const onWarning = (warning: Error) => {
      if (warning.name === 'TimeoutOverflowWarning') overflows++;
    };
    let app: ReturnType<typeof sseApp>;
    try {
      app = sseApp(createMemoryStore(), {
        liveStreams: { channel: createMemoryLiveStreams(), blockMs: 2 ** 31 },
      });
    } catch (error) {
      // Refused up front: fine.
      expect((error as { code?: string }).code).toBe('INVALID_INPUT');
      return;
    }
    const server = await serveWeb(app.handle);
    servers.push(server);
    const plan = { events: 3, intervalMs: 300 };
    const first = await openStream(server.url, 'rev9-live', plan);
    await first.readUntil('"n":1');
    process.on('warning', onWarning);
    try {
      const second = await openStream(server.url, 'rev9-live', plan);
      expect(second.response.status).toBe(200);
      await Promise.all([first.readAll(), second.readAll()]);
    } finally {
      process.off('warning', onWarning);
    }
    expect(app.runs()).toBe(1);
    expect(overflows).toBe(0);
  });

  it('stallMs, blockMs and anchorWaitMs past 2^31 - 1 ms are refused up front, typed; 2^31 - 1 is taken', () => {
    for (const name of ['stallMs', 'blockMs', 'anchorWaitMs'] as const) {
      expect(() =>
        sseApp(createMemoryStore(), {
          liveStreams: { channel: createMemoryLiveStreams(), [name]: 2 ** 31 },
        }),
      ).toThrow(
        expect.objectContaining({
          code: 'INVALID_INPUT',
          message: expect.stringContaining(`liveStreams.${name}`),
        }),
      );
      expect(() =>
        sseApp(createMemoryStore(), {
          liveStreams: { channel: createMemoryLiveStreams(), [name]: 2 ** 31 - 1 },
        }),
      ).not.toThrow();
    }
  });
});
