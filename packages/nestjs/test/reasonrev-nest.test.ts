import { rawBodyText, rawIsReplay, rawPost, rawStatusLine } from '@idem/http-conformance';
import 'reflect-metadata';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, HttpCode, Module, Post, Res } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

// Adversarial review of the replayed reason phrase (wt/reasonrev) on NestJS, on
// platform-express and platform-fastify: first response and replay compared as bytes off a
// raw HTTP/1.1 socket.

const statusLine = rawStatusLine;
const lineText = (raw: Buffer) => rawStatusLine(raw).toString('latin1');
const isReplay = rawIsReplay;
const bodyOf = rawBodyText;

let runs = 0;
let serial = 0;

/** The Node response under either platform's response object. */
type PlatformResponse = { raw?: { statusMessage: string }; statusMessage?: string };
function setPhrase(res: PlatformResponse, phrase: string): void {
  if (res.raw) res.raw.statusMessage = phrase;
  else res.statusMessage = phrase;
}

@Controller()
@Idempotent()
class PhraseController {
  @Post('latin')
  @HttpCode(201)
  latin(@Res({ passthrough: true }) res: PlatformResponse) {
    runs++;
    setPhrase(res, 'Cr\u00e9\u00e9 \u00ff\t');
    return { id: runs };
  }

  @Post('accepted')
  @HttpCode(202)
  accepted(@Res({ passthrough: true }) res: PlatformResponse) {
    runs++;
    setPhrase(res, 'accepted');
    return { id: runs };
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
  ],
  controllers: [PhraseController],
})
class PhraseModule {}

describe.each<Platform>(['express', 'fastify'])('reasonrev (NestJS on platform-%s)', (platform) => {
  let url = '';
  let close = async () => {};
  beforeAll(async () => {
    ({ url, close } = await startNest(platform, PhraseModule));
  });
  afterAll(() => close());

  async function twice(path: string) {
    const key = `nest-${platform}-${++serial}`;
    const before = runs;
    const first = await rawPost(url, path, key);
    const replay = await rawPost(url, path, key);
    return { key, first, replay, ran: runs - before };
  }

  it('a Latin-1 phrase with a tab: the same bytes, the handler once', async () => {
    const { first, replay, ran } = await twice('/latin');
    expect(lineText(first)).toBe('HTTP/1.1 201 Cr\u00e9\u00e9 \u00ff\t');
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
    expect(bodyOf(replay)).toBe(bodyOf(first));
    expect(ran).toBe(1);
  });

  it("the usual phrase in another case ('accepted'): replayed as is", async () => {
    const { first, replay } = await twice('/accepted');
    expect(lineText(first)).toBe('HTTP/1.1 202 accepted');
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
  });

  it('another body under the same key: 422, the handler not run again', async () => {
    const { key } = await twice('/latin');
    const before = runs;
    const other = await rawPost(url, '/latin', key, '{"a":2}');
    expect(lineText(other)).toMatch(/^HTTP\/1\.1 422 /);
    expect(runs).toBe(before);
  });
});
