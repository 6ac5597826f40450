/**
 * `JSON.stringify` for a value a framework parsed from a request body, without recursion: a
 * body nested 100k deep parses (V8's `JSON.parse` does not recurse) but `JSON.stringify`
 * would throw `RangeError`. Object keys keep their order, properties whose value is
 * `undefined`, a function or a symbol are left out and such array items become `null`, as
 * `JSON.stringify` does; an object with `toJSON` (a `Date`) is written by `JSON.stringify`.
 * Returns undefined past `maxLength` characters (which also ends a cycle deeper than
 * `JSON.stringify` could see).
 * @internal
 */
export function jsonTextOf(value: unknown, maxLength: number): string | undefined {
  // Every value writes at least one character: more values than `maxLength` is too long, known
  // before `JSON.stringify` writes out shared subtrees in full (a YAML document of 874 bytes
  // with aliases is 2^40 leaves: minutes of blocked event loop).
  if (Number.isFinite(maxLength) && !withinValues(value, maxLength)) return undefined;
  try {
    const text = JSON.stringify(value) ?? '';
    return text.length > maxLength ? undefined : text;
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
  }
  const out: string[] = [];
  let length = 0;
  // Work list: a value to write, or a literal piece of text (brackets, commas, keys).
  const work: ({ text: string } | { value: unknown; inArray: boolean })[] = [
    { value, inArray: false },
  ];
  for (let item = work.pop(); item !== undefined; item = work.pop()) {
    if (length > maxLength) return undefined;
    if ('text' in item) {
      out.push(item.text);
      length += item.text.length;
      continue;
    }
    const current = item.value;
    if (current === null || typeof current !== 'object' || 'toJSON' in current) {
      const text = JSON.stringify(current) ?? (item.inArray ? 'null' : '');
      out.push(text);
      length += text.length;
      continue;
    }
    // Pushed in reverse, so that they come off the work list in order.
    const pieces: ({ text: string } | { value: unknown; inArray: boolean })[] = [];
    if (Array.isArray(current)) {
      pieces.push({ text: '[' });
      current.forEach((element, index) => {
        if (index > 0) pieces.push({ text: ',' });
        pieces.push({ value: element, inArray: true });
      });
      pieces.push({ text: ']' });
    } else {
      pieces.push({ text: '{' });
      let first = true;
      for (const [key, element] of Object.entries(current)) {
        if (element === undefined || typeof element === 'function' || typeof element === 'symbol')
          continue;
        pieces.push({ text: `${first ? '' : ','}${JSON.stringify(key)}:` });
        pieces.push({ value: element, inArray: false });
        first = false;
      }
      pieces.push({ text: '}' });
    }
    for (let i = pieces.length - 1; i >= 0; i--) work.push(pieces[i] as (typeof pieces)[number]);
  }
  return length > maxLength ? undefined : out.join('');
}

/**
 * Whether `value` has at most `budget` values (itself, its members and items, a shared
 * subtree counted at each place it appears); walked without recursion and stopped at the
 * budget. A cycle throws the `TypeError` `JSON.stringify` throws for one.
 */
function withinValues(value: unknown, budget: number): boolean {
  const ancestors = new Set<object>();
  const work: { value: unknown; leave?: true }[] = [{ value }];
  let count = 0;
  for (let item = work.pop(); item !== undefined; item = work.pop()) {
    const current = item.value;
    if (item.leave) {
      ancestors.delete(current as object);
      continue;
    }
    if (++count > budget) return false;
    if (current === null || typeof current !== 'object' || 'toJSON' in current) continue;
    if (ancestors.has(current)) throw new TypeError('Converting circular structure to JSON');
    ancestors.add(current);
    work.push({ value: current, leave: true });
    if (Array.isArray(current)) {
      if (current.length > budget - count) return false;
      for (let i = current.length - 1; i >= 0; i--) work.push({ value: current[i] });
    } else {
      const keys = Object.keys(current);
      if (keys.length > budget - count) return false;
      for (let i = keys.length - 1; i >= 0; i--)
        work.push({ value: (current as Record<string, unknown>)[keys[i] as string] });
    }
  }
  return true;
}
