import 'reflect-metadata';
import type { ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { silentAfterLeaving } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, Res } from '@nestjs/common';
import { afterAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

const LEASE = 300;

for (const platform of ['express', 'fastify'] as const) {
  describe(`rev30c nestjs on platform-${platform}: a @Res() handler that awaits its stream's end`, () => {
    const closers: (() => Promise<unknown>)[] = [];
    afterAll(async () => {
      for (const close of closers) await close();
    });
    it('the stream goes silent after the client left: the key is freed within a few leases', async () => {
      let runs = 0;
      const streams: PassThrough[] = [];
      @Controller()
      @Idempotent()
      class StreamController {
        @Post('s')
        async s(@Res() reply: ServerResponse | { raw: ServerResponse }) {
          runs += 1;
          const res = 'raw' in reply ? reply.raw : reply;
          const stream = new PassThrough();
          streams.push(stream);
          res.writeHead(200, { 'content-type': 'text/plain' });
          stream.write(`begun ${runs}.`);
          await pipeline(stream, res).catch(() => {});
        }
      }
      @Module({
        imports: [
          IdempotencyModule.forRoot({
            store: createMemoryStore(),
            scope: 'global',
            leaseMs: LEASE,
            maxHoldMs: 60_000,
          }),
        ],
        controllers: [StreamController],
      })
      class StreamModule {}
      const app = await startNest(platform as Platform, StreamModule);
      closers.push(async () => {
        for (const stream of streams) stream.destroy();
        await app.close();
      });
      const key = `rev30c-nest-${platform}-${process.pid}`;
      const statuses = await silentAfterLeaving(app.url, '/s', key, LEASE, () => runs);
      expect(statuses.at(-1)).toBe(200);
      expect(runs).toBe(2);
    });
  });
}
