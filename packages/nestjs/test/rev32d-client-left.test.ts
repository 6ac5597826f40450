import 'reflect-metadata';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Sse, UseGuards } from '@nestjs/common';
import { Observable } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

// rev32d FINDING (HIGH, a partial body recorded as the outcome; before nesthono32 too): an
// `@Sse()` client that left mid-stream. Nest listens to the connection's 'close', tears the
// handler's Observable down and ends the response: that end was taken for the stream's own, so
// the events sent before the client left (3 of 40) were recorded as the complete outcome and
// replayed to every retry for the whole retention, the handler never run again. An end made from
// the connection's 'close' is now a body cut short, as one made from the request's 'close'
// (@idem/http): never recorded, the key released, a retry runs the stream again.

const EVENTS = 40;
let runs = 0;

@Controller()
@UseGuards(TenantGuard)
class StreamController {
  @Sse('events')
  @Idempotent({ methods: ['GET'] })
  events(): Observable<{ data: unknown; id?: string }> {
    runs += 1;
    return new Observable((subscriber) => {
      let i = 0;
      const timer = setInterval(() => {
        i += 1;
        subscriber.next({ data: { i, pad: 'x'.repeat(64) }, id: String(i) });
        if (i === EVENTS) {
          clearInterval(timer);
          subscriber.complete();
        }
      }, 15);
      return () => clearInterval(timer);
    });
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [StreamController],
})
class StreamModule {}

const events = (body: Buffer) => body.toString('utf8').split('\n\n').filter(Boolean).length;

describe.each<Platform>(['express', 'fastify'])(
  'rev32d nestjs on %s: an @Sse() client that leaves mid-stream',
  (platform) => {
    it('the cut stream is never recorded: a retry runs it again and gets every event', async () => {
      const { url, close } = await startNest(platform, StreamModule);
      try {
        const before = runs;
        const key = `rev32d-sse-left-${platform}-${process.pid}`;
        const left = await send(url, '/events', { method: 'GET', key, leaveAfterBytes: 200 });
        expect(left.complete).toBe(false);
        // The teardown has run by now (the client's connection closed at once).
        await new Promise((resolve) => setTimeout(resolve, 100));
        const retry = await send(url, '/events', { method: 'GET', key });
        expect(retry.status).toBe(200);
        expect(retry.headers['idempotent-replayed']).toBeUndefined();
        expect(events(retry.body)).toBe(EVENTS);
        expect(runs - before).toBe(2);
        const replay = await send(url, '/events', { method: 'GET', key });
        expect(replay.headers['idempotent-replayed']).toBe('true');
        expect(replay.body.equals(retry.body)).toBe(true);
      } finally {
        await close();
      }
    });
  },
);
