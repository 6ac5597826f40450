import { describe, expect, it } from 'vitest';
import { sseData } from '../src/model/upstream-model.js';

function streamOf(text: string, chunkBytes: number): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + chunkBytes));
      at += chunkBytes;
    },
  });
}

async function all(stream: ReadableStream<Uint8Array>): Promise<string[]> {
  const out: string[] = [];
  for await (const data of sseData(stream)) out.push(data);
  return out;
}

describe('sseData', () => {
  const body =
    'data: {"a":1}\n\n' +
    ': a comment\r\nevent: x\r\ndata:{"b":"é"}\r\n\r\n' +
    'data: line one\ndata: line two\n\n' +
    'data: [DONE]\n\n';
  const expected = ['{"a":1}', '{"b":"é"}', 'line one\nline two', '[DONE]'];

  it('yields each event once, whatever the chunking (one byte, seven bytes, whole)', async () => {
    for (const size of [1, 7, body.length])
      expect(await all(streamOf(body, size))).toEqual(expected);
  });

  it('keeps a megabyte line whole when it arrives in 16 KiB chunks', async () => {
    const big = 'x'.repeat(1024 * 1024);
    const got = await all(streamOf(`data: ${big}\n\ndata: [DONE]\n\n`, 16 * 1024));
    expect(got).toHaveLength(2);
    expect(got[0]).toBe(big);
    expect(got[1]).toBe('[DONE]');
  });
});
