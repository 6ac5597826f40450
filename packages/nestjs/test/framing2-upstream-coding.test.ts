// @idem/nestjs: an Express middleware (or a Fastify onRequest hook) puts a Transfer-Encoding
// that is not Node's own chunked (`gzip`, `gzip, chunked`) on the response before the
// interceptor. The replay dropped it, and Node then framed a streamed replay by nothing: ended
// by the connection's close under a `Connection: keep-alive` head, the request pipelined
// behind it lost (framing2).
import 'reflect-metadata';
import { Readable } from 'node:stream';
import { describeUpstreamFraming } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Get, Header, HttpCode, Module, Post, StreamableFile } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { startNest } from './scenario-app.js';

let runs = 0;

@Controller()
class FramingController {
  @Post('stream')
  @HttpCode(200)
  @Idempotent()
  stream() {
    runs++;
    const chunks = ['alpha-', 'beta-', 'gamma'];
    const body = new Readable({
      read() {
        const chunk = chunks.shift();
        if (chunk === undefined) this.push(null);
        else setTimeout(() => this.push(chunk), 5);
      },
    });
    return new StreamableFile(body, { type: 'text/plain' });
  }

  @Post('whole')
  @HttpCode(200)
  @Header('content-type', 'text/plain')
  @Idempotent()
  whole() {
    runs++;
    return 'whole-body';
  }

  @Get('ping')
  @Header('content-type', 'text/plain')
  ping() {
    return 'pong';
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
  ],
  controllers: [FramingController],
})
class FramingModule {}

describeUpstreamFraming('@idem/nestjs on Express', async () => {
  const { url, close } = await startNest('express', FramingModule, (app) =>
    (app as NestExpressApplication).use(
      (
        request: { headers: Record<string, unknown> },
        response: { setHeader(name: string, value: string): void },
        next: () => void,
      ) => {
        const coding = request.headers['x-framing'];
        if (typeof coding === 'string') response.setHeader('Transfer-Encoding', coding);
        next();
      },
    ),
  );
  return { url, close, runs: () => runs };
});

describeUpstreamFraming('@idem/nestjs on Fastify', async () => {
  const { url, close } = await startNest('fastify', FramingModule, (app) =>
    (app as NestFastifyApplication)
      .getHttpAdapter()
      .getInstance()
      .addHook('onRequest', async (request, reply) => {
        const coding = request.headers['x-framing'];
        if (typeof coding === 'string') reply.header('transfer-encoding', coding);
      }),
  );
  return { url, close, runs: () => runs };
});
