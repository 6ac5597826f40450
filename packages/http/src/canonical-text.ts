import { isLossy } from './json-ambiguity.js';
import { sortInPlace } from './small-sort.js';

/** The JSON text is ambiguous (see `isAmbiguousJson`): its bytes are the request. */
export const AMBIGUOUS = null;

/** Nesting past which {@link canonicalJsonText} gives up (the caller takes the long way). */
const TEXT_DEPTH = 64;

/** Thrown inside the scan to give up: the caller takes the long way. */
const GIVE_UP = { giveUp: true } as const;
/** Thrown inside the scan: the text is ambiguous. */
const SAYS_MORE = { ambiguous: true } as const;

/**
 * In one pass over JSON `text` that `JSON.parse` accepted, decoded from UTF-8 strictly (no
 * lone surrogates): what `canonicalJson(JSON.parse(text))` of `@idem/core` writes, or
 * {@link AMBIGUOUS} when `isAmbiguousJson(text)` is true (a repeated member name, a number
 * literal that is not its double's value), or undefined when it gives up (nesting past
 * {@link TEXT_DEPTH}): then ask those two as before. Cheaper than both together: no second
 * walk over a parsed tree, no set of names per object.
 *
 * Canonical JSON of the parsed value, from its text: members sorted by name (UTF-16 code
 * units, as `Array.prototype.sort` orders strings), no whitespace, strings as
 * `JSON.stringify` writes them (the text's own spelling when it has no escape: for a
 * string of valid JSON decoded strictly, nothing in it needs one), numbers as `String` of
 * their double (`-0` as `0`).
 * @internal
 */
export function canonicalJsonText(text: string): string | typeof AMBIGUOUS | undefined {
  const scan = new Scan(text);
  try {
    return scan.value(0);
  } catch (error) {
    if (error === SAYS_MORE) return AMBIGUOUS;
    if (error === GIVE_UP) return undefined;
    throw error;
  }
}

/** One member of an object: its name (decoded) and its canonical `"name":value` text. */
interface Member {
  name: string;
  text: string;
}

function byName(a: Member, b: Member): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

class Scan {
  i = 0;
  /** The decoded name of the last string read by {@link Scan.string}. */
  name = '';
  constructor(readonly text: string) {}

  space(): number {
    const { text } = this;
    let ch = text.charCodeAt(this.i);
    while (ch === 0x20 || ch === 0x0a || ch === 0x0d || ch === 0x09) ch = text.charCodeAt(++this.i);
    return ch;
  }

  value(depth: number): string {
    const ch = this.space();
    if (ch === 0x22 /* " */) return this.string();
    if (ch === 0x7b /* { */) return this.object(depth);
    if (ch === 0x5b /* [ */) return this.array(depth);
    if (ch === 0x74 /* t */) {
      this.i += 4;
      return 'true';
    }
    if (ch === 0x66 /* f */) {
      this.i += 5;
      return 'false';
    }
    if (ch === 0x6e /* n */) {
      this.i += 4;
      return 'null';
    }
    return this.number();
  }

  /**
   * A string token at `i`: its canonical text; with `named`, its decoded value in
   * {@link Scan.name} too.
   */
  string(named = false): string {
    const { text } = this;
    const start = this.i;
    let plain = true;
    let i = start + 1;
    for (;;) {
      const ch = text.charCodeAt(i);
      if (ch === 0x22) break;
      // Unterminated: not text JSON.parse took.
      if (Number.isNaN(ch)) throw GIVE_UP;
      if (ch === 0x5c /* \ */) {
        plain = false;
        i += 2;
        continue;
      }
      // Valid JSON has no raw control character in a string; a surrogate (none in strictly
      // decoded UTF-8 but as a pair) is left to JSON.stringify all the same.
      if (ch >= 0xd800 && ch <= 0xdfff) plain = false;
      i++;
    }
    this.i = i + 1;
    if (plain) {
      if (named) this.name = text.slice(start + 1, i);
      return text.slice(start, i + 1);
    }
    const decoded = JSON.parse(text.slice(start, i + 1)) as string;
    if (named) this.name = decoded;
    return JSON.stringify(decoded);
  }

  number(): string {
    const { text } = this;
    const start = this.i;
    let i = start;
    let simple = true;
    for (;;) {
      const ch = text.charCodeAt(i);
      if (ch >= 0x30 && ch <= 0x39) i++;
      else if (ch === 0x2d /* - */ && i === start) i++;
      else if (ch === 0x2e /* . */ || ch === 0x65 || ch === 0x45 || ch === 0x2b || ch === 0x2d) {
        simple = false;
        i++;
      } else break;
    }
    this.i = i;
    const token = text.slice(start, i);
    // An integer of at most 15 characters: exact, and already its double's shortest form.
    if (simple && token.length <= 15) return token === '-0' ? '0' : token;
    if (token.length === 0) throw GIVE_UP;
    if (isLossy(token)) throw SAYS_MORE;
    const n = Number(token);
    return n === 0 ? '0' : String(n);
  }

  array(depth: number): string {
    if (depth >= TEXT_DEPTH) throw GIVE_UP;
    this.i++;
    if (this.space() === 0x5d /* ] */) {
      this.i++;
      return '[]';
    }
    let out = '[';
    for (;;) {
      out += this.value(depth + 1);
      const ch = this.space();
      this.i++;
      if (ch === 0x5d) return `${out}]`;
      out += ',';
    }
  }

  object(depth: number): string {
    if (depth >= TEXT_DEPTH) throw GIVE_UP;
    this.i++;
    if (this.space() === 0x7d /* } */) {
      this.i++;
      return '{}';
    }
    const members: Member[] = [];
    for (;;) {
      this.space();
      const key = this.string(true);
      const name = this.name;
      this.space();
      this.i++; // ':'
      members.push({ name, text: `${key}:${this.value(depth + 1)}` });
      const ch = this.space();
      this.i++;
      if (ch === 0x7d) break;
    }
    if (members.length > 1) sortInPlace(members, byName);
    let out = '{';
    for (let m = 0; m < members.length; m++) {
      const member = members[m] as Member;
      // Sorted: a repeated name sits next to itself.
      if (m > 0) {
        if (member.name === (members[m - 1] as Member).name) throw SAYS_MORE;
        out += ',';
      }
      out += member.text;
    }
    return `${out}}`;
  }
}
