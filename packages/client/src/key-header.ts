/**
 * Writes a key for the `Idempotency-Key` header: as a Structured Field String (RFC 8941
 * section 3.3.3, `"` and `\` escaped) or bare.
 */
export function formatKeyHeader(key: string, format: 'sf-string' | 'bare'): string {
  if (format === 'bare') return key;
  return `"${key.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** Reads a key header value: a Structured Field String is unquoted, anything else kept as is. */
export function parseKeyHeader(value: string): string {
  const trimmed = value.trim();
  if (trimmed.length >= 2 && trimmed.startsWith('"') && trimmed.endsWith('"')) {
    return trimmed.slice(1, -1).replace(/\\([\\"])/g, '$1');
  }
  return trimmed;
}
