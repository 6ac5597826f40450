/**
 * Whether valid JSON `text` says more than `JSON.parse` keeps of it, so that two different
 * bodies could parse to one value (and share a fingerprint):
 *
 * - a number whose decimal value is not the value of the double it parses to (`0.3` and
 *   `0.30000000000000001`, `1e-400` and `0`, integers past 2^53, `1e400`);
 * - an object with a repeated member name (`{"a":1,"a":2}` parses to `{"a":2}`).
 *
 * A body for which this is true is fingerprinted by its bytes. One linear pass, iterative
 * (a body nested 100k deep is fine).
 * @internal
 */
export function isAmbiguousJson(text: string): boolean {
  // One entry per open container: the member names of an object, null for an array.
  const open: (Set<string> | null)[] = [];
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x7b /* { */) open.push(new Set());
    else if (ch === 0x5b /* [ */) open.push(null);
    else if (ch === 0x7d /* } */ || ch === 0x5d /* ] */) open.pop();
    else if (ch === 0x22 /* " */) {
      const start = i;
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) {
        if (text.charCodeAt(i) === 0x5c /* \ */) i++;
      }
      const names = open.at(-1);
      if (names && nextSignificant(text, i + 1) === 0x3a /* : */) {
        const raw = text.slice(start + 1, i);
        // Escapes spell one name many ways ("\u0061" is "a"): compare the decoded names.
        const name = raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw;
        if (names.has(name)) return true;
        names.add(name);
      }
    } else if (ch === 0x2d /* - */ || (ch >= 0x30 && ch <= 0x39)) {
      NUMBER.lastIndex = i;
      const token = NUMBER.exec(text)?.[0] ?? '';
      if (token.length === 0 || isLossy(token)) return true;
      i += token.length - 1;
    }
  }
  return false;
}

const NUMBER = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

function nextSignificant(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch !== 0x20 && ch !== 0x09 && ch !== 0x0a && ch !== 0x0d) return ch;
  }
  return -1;
}

/** True when the number literal `token` is not exactly the double it parses to. @internal */
export function isLossy(token: string): boolean {
  // At most 15 digits and no exponent: within the doubles' normal range, and every decimal
  // of 15 significant digits round-trips (DBL_DIG), so it is the double's shortest form.
  if (token.length <= 15 && !token.includes('e') && !token.includes('E')) return false;
  const n = Number(token);
  if (!Number.isFinite(n)) return true;
  if (/^-?\d+$/.test(token) && !Number.isSafeInteger(n)) return true;
  // String(n) is the shortest decimal that round-trips: equal digits mean an exact literal.
  const shortest = String(n);
  return shortest !== token && decimal(token) !== decimal(shortest);
}

/**
 * A decimal literal as `<significant digits>e<exponent>` (zero as `0`), sign dropped for zero.
 * Linear in the literal's length: its zeros are trimmed by loops, not by expressions such as
 * `/0+$/`, which backtrack over every run of zeros that is not at the end (a 100 KB literal
 * `1.000…0001` cost seconds).
 */
function decimal(literal: string): string {
  const negative = literal.charCodeAt(0) === 0x2d; /* - */
  const body = negative ? literal.slice(1) : literal;
  let e = body.indexOf('e');
  if (e === -1) e = body.indexOf('E');
  const mantissa = e === -1 ? body : body.slice(0, e);
  const exponent = e === -1 ? 0 : Number(body.slice(e + 1));
  const dot = mantissa.indexOf('.');
  const whole = dot === -1 ? mantissa : mantissa.slice(0, dot);
  const digits = dot === -1 ? whole : whole + mantissa.slice(dot + 1);
  let first = 0;
  while (first < digits.length && digits.charCodeAt(first) === 0x30 /* 0 */) first++;
  let end = digits.length;
  while (end > first && digits.charCodeAt(end - 1) === 0x30 /* 0 */) end--;
  if (end === first) return '0';
  return `${negative ? '-' : ''}${digits.slice(first, end)}e${whole.length + exponent - first}`;
}
