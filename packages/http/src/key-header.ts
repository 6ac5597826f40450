import { validateKey } from '@idem/core';

/** Result of {@link parseIdempotencyKey}. */
export type ParsedKey = { ok: true; key: string } | { ok: false; reason: string };

// RFC 8941 sf-string characters that need no escape: printable ASCII except DQUOTE and "\".
const UNESCAPED = /^[\x20\x21\x23-\x5b\x5d-\x7e]$/;

/**
 * Parses an `Idempotency-Key` field value: a Structured Field String (RFC 8941: `"..."`
 * with `\"` and `\\` as the only escapes, parameters after it ignored) or the bare token
 * form that Stripe-style clients send (without quotes, backslashes or commas, so that a
 * repeated header, joined by ", ", is refused). The key MUST then be 1..255 printable ASCII
 * characters; anything else is refused with a reason, never repaired.
 */
export function parseIdempotencyKey(fieldValue: string): ParsedKey {
  const value = fieldValue.trim();
  if (value.length === 0) return { ok: false, reason: 'The Idempotency-Key header is empty' };
  let key: string;
  if (value.startsWith('"')) {
    const parsed = parseSfString(value);
    if (!parsed.ok) return parsed;
    key = parsed.key;
  } else {
    if (value.includes('"') || value.includes('\\')) {
      return { ok: false, reason: 'A bare Idempotency-Key must not contain quotes or backslashes' };
    }
    // Repeated header fields arrive joined by ", ": refuse rather than pick one.
    if (value.includes(',')) {
      return {
        ok: false,
        reason: 'A bare Idempotency-Key must not contain commas (send it quoted)',
      };
    }
    key = value;
  }
  try {
    validateKey(key);
  } catch (error) {
    return { ok: false, reason: error instanceof Error ? error.message : String(error) };
  }
  return { ok: true, key };
}

const PARAMETERS =
  /^(?:;[ ]*[a-z*][a-z0-9_\-.*]*(?:=(?:"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"|[A-Za-z0-9*:/.+_\-!#$%&'^`|~?@]+))?)*$/;

function parseSfString(value: string): ParsedKey {
  let key = '';
  for (let i = 1; i < value.length; i++) {
    const ch = value[i] as string;
    if (ch === '\\') {
      const next = value[i + 1];
      if (next !== '"' && next !== '\\') {
        return {
          ok: false,
          reason: 'Only \\" and \\\\ escapes are allowed in a quoted Idempotency-Key',
        };
      }
      key += next;
      i++;
    } else if (ch === '"') {
      const rest = value.slice(i + 1).trimEnd();
      // Parameters (RFC 8941 `;key=value`) are part of an Item and are ignored; anything else,
      // such as a second header field joined with a comma, is refused.
      if (!PARAMETERS.test(rest)) {
        return { ok: false, reason: 'Unexpected characters after the quoted Idempotency-Key' };
      }
      return { ok: true, key };
    } else if (!UNESCAPED.test(ch)) {
      return {
        ok: false,
        reason: 'The quoted Idempotency-Key contains a character that is not printable ASCII',
      };
    } else {
      key += ch;
    }
  }
  return { ok: false, reason: 'The quoted Idempotency-Key has no closing quote' };
}

/** Serializes a key as a Structured Field String, the form a client SHOULD send. */
export function formatIdempotencyKey(key: string): string {
  validateKey(key);
  return `"${key.replace(/[\\"]/g, (ch) => `\\${ch}`)}"`;
}
