import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { send, spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, StreamableFile, UseGuards } from '@nestjs/common';
import { Observable } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

// Nest learns that the client left from the request's socket: a body the handler answers
// after that was dropped unsent and the response never ended, so nothing was recorded and
// the retry ran the handler again (after the lease) or got 409. On Node 24 even a one-chunk
// StreamableFile was dropped; on Node 20 every body below was.
const runs = new Map<string, number>();
const ran = (route: string) => runs.set(route, (runs.get(route) ?? 0) + 1);
const CHUNKS = ['one.', 'two.', 'three.'];
const ANSWER_AFTER_MS = 250;

async function* slowChunks(): AsyncGenerator<string> {
  for (const chunk of CHUNKS) {
    await sleep(20);
    yield chunk;
  }
}

@Controller()
@UseGuards(TenantGuard)
@Idempotent()
class LeftController {
  @Post('file')
  async file() {
    ran('file');
    await sleep(ANSWER_AFTER_MS);
    return new StreamableFile(Readable.from(slowChunks()));
  }

  @Post('iterable')
  async iterable() {
    ran('iterable');
    await sleep(ANSWER_AFTER_MS);
    return slowChunks();
  }

  @Post('observable')
  observable() {
    ran('observable');
    return new Observable<{ done: boolean }>((subscriber) => {
      const timer = setTimeout(() => {
        subscriber.next({ done: true });
        subscriber.complete();
      }, ANSWER_AFTER_MS);
      return () => clearTimeout(timer);
    });
  }
}

const spy = spyStore(createMemoryStore());

@Module({
  imports: [
    IdempotencyModule.forRoot({
      store: spy.store,
      // Long enough that a retry within the test never finds the lease lost.
      leaseMs: 30_000,
      onWarning: () => {},
    }),
  ],
  controllers: [LeftController],
})
class LeftModule {}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs on platform-%s: a body answered after the client left',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, LeftModule));
    });
    afterAll(() => close());

    it.each([
      ['file', 'a StreamableFile of several chunks', CHUNKS.join('')],
      ['iterable', 'an async iterable', CHUNKS.join('')],
      ['observable', 'an Observable', JSON.stringify({ done: true })],
    ])(
      '/%s: %s is sent into the recording, and the retry gets the replay',
      async (route, _what, body) => {
        const key = randomUUID();
        const before = runs.get(route) ?? 0;
        const recorded = spy.completed.length;
        await expect(send(url, `/${route}`, { key, body: {}, timeoutMs: 80 })).rejects.toThrow(
          /timed out/,
        );
        const deadline = Date.now() + 5_000;
        while (spy.completed.length === recorded && Date.now() < deadline) await sleep(10);
        expect(spy.calls.release, 'the key was released: a retry would run again').toBe(0);
        expect(spy.completed.length, 'the outcome was recorded').toBe(recorded + 1);
        const retry = await send(url, `/${route}`, { key, body: {} });
        expect(retry.status).toBe(201);
        expect(retry.headers['idempotent-replayed']).toBe('true');
        expect(retry.body.toString('utf8')).toBe(body);
        expect(runs.get(route)).toBe(before + 1);
      },
    );
  },
);
