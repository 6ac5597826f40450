/**
 * The local model's tokenizer: runs of letters and digits, and every other visible character,
 * each count as one token. Deterministic and good enough to bill by.
 */
export function countTokens(text: string): number {
  return text.match(/[\p{L}\p{N}]+|[^\s\p{L}\p{N}]/gu)?.length ?? 0;
}
