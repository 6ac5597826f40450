import { validateKey } from '@idem/core';
import { trimOws } from './media-type.js';

/** Result of {@link parseIdempotencyKey}. */
export type ParsedKey = { ok: true; key: string } | { ok: false; reason: string };

// RFC 8941 sf-string characters that need no escape: printable ASCII except DQUOTE and "\".
const UNESCAPED = /^[\x20\x21\x23-\x5b\x5d-\x7e]$/;

/**
 * Parses an `Idempotency-Key` field value: a Structured Field String (RFC 8941: `"..."`
 * with `\"` and `\\` as the only escapes; RFC 8941 parameters after it, in every value form
 * the RFC allows, are checked and ignored) or the bare token form that Stripe-style clients
 * send (without quotes, backslashes or commas, so that a repeated header, joined by ", ", is
 * refused). The key MUST then be 1..255 printable ASCII
 * characters; anything else is refused with a reason, never repaired.
 */
export function parseIdempotencyKey(fieldValue: string): ParsedKey {
  const value = trimOws(fieldValue);
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

// RFC 8941 3.1.2 parameters: *( ";" *SP key [ "=" bare-item ] ); a key without a value is true.
const SF_KEY = String.raw`[a-z*][a-z0-9_\-.*]*`;
const SF_BARE_ITEM = [
  String.raw`-?\d{1,12}\.\d{1,3}`, // sf-decimal
  String.raw`-?\d{1,15}`, // sf-integer
  String.raw`"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"`, // sf-string
  String.raw`[A-Za-z*][!#$%&'*+\-.^_\x60|~0-9A-Za-z:/]*`, // sf-token
  // sf-binary: base64 in groups of four, "=" padding optional at the end only
  ':(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?:',
  String.raw`\?[01]`, // sf-boolean
].join('|');
const PARAMETERS = new RegExp(`^(?:;[ ]*${SF_KEY}(?:=(?:${SF_BARE_ITEM}))?)*$`);

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
      const rest = value.slice(i + 1);
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
