import { describe, expect, it } from 'vitest';
import { collect, createLocalModel, localReply, parseDirectives } from '../src/index.js';
import { ModelError } from '../src/model/model.js';
import { countTokens } from '../src/model/tokens.js';

const ask = (content: string) => ({ model: 'local-1', messages: [{ role: 'user', content }] });

describe('the local model', () => {
  it('answers the same text and usage for the same model and prompt, and differs otherwise', async () => {
    const model = createLocalModel({ chunkDelayMs: 0 });
    const a = await collect(model.generate(ask('hello there')));
    const b = await collect(createLocalModel({ chunkDelayMs: 0 }).generate(ask('hello there')));
    const c = await collect(model.generate(ask('hello there!')));
    expect(a).toEqual(b);
    expect(c.content).not.toBe(a.content);
    expect(a.content).toBe(localReply('local-1', 'user: hello there'));
    expect(a.usage).toEqual({
      prompt_tokens: countTokens('hello there') + 1,
      completion_tokens: countTokens(a.content),
      total_tokens: countTokens('hello there') + 1 + countTokens(a.content),
    });
  });

  it('streams the reply in several pieces that join to the whole', async () => {
    const pieces: string[] = [];
    const generation = createLocalModel({ chunkDelayMs: 0 }).generate(ask('pieces'));
    for (let step = await generation.next(); !step.done; step = await generation.next()) {
      pieces.push(step.value);
    }
    expect(pieces.length).toBeGreaterThan(3);
    expect(pieces.join('')).toBe(localReply('local-1', 'user: pieces'));
  });

  it('fails the first N executions of a [fail:N] prompt with a 500, then succeeds', async () => {
    const model = createLocalModel({ chunkDelayMs: 0 });
    for (let i = 0; i < 2; i++) {
      const failure = await collect(model.generate(ask('[fail:2] flaky'))).catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(ModelError);
      expect((failure as ModelError).status).toBe(500);
    }
    await expect(collect(model.generate(ask('[fail:2] flaky')))).resolves.toMatchObject({
      content: localReply('local-1', 'user: [fail:2] flaky'),
    });
  });

  it('stalls for [stall:MS] and gives up when its signal aborts', async () => {
    const model = createLocalModel({ chunkDelayMs: 0 });
    const t0 = performance.now();
    await collect(model.generate(ask('[stall:120] slow')));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(100);
    const signal = AbortSignal.timeout(20);
    await expect(
      collect(model.generate({ ...ask('[stall:5000] stuck'), signal })),
    ).rejects.toThrow();
  });

  it('reads directives', () => {
    expect(parseDirectives('[fail:3] [stall:200] [slow:7] hi')).toEqual({
      fail: 3,
      stallMs: 200,
      slowMs: 7,
    });
    expect(parseDirectives('plain')).toEqual({ fail: 0, stallMs: 0, slowMs: undefined });
  });
});
