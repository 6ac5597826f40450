import { describe, expect, it } from 'vitest';
import { streamedAnswer } from '../src/driver.js';

const chunk = (content: string) =>
  `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content } }] })}\n\n`;

describe('streamedAnswer', () => {
  it('reads a whole stream as the content the verdict judges, keep-alive comments ignored', () => {
    const text = `${chunk('answer to x, ')}: keep-alive\n\n${chunk('nonce 1.')}data: [DONE]\n\n`;
    expect(streamedAnswer(text)).toBe(JSON.stringify({ content: 'answer to x, nonce 1.' }));
  });

  it('takes a stream cut before [DONE] for no answer (the client retries)', () => {
    expect(streamedAnswer(`${chunk('answer to x, ')}`)).toBeUndefined();
  });
});
