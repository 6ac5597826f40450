/** Lists up to this long are sorted by insertion (see {@link sortInPlace}). */
const INSERTION_MAX = 16;

/**
 * Sorts `list` in place by `compare` and returns it, in the order a stable
 * `Array.prototype.sort(compare)` gives. A short list (the members of a request body's
 * object, the fingerprint's extras, a response's recorded headers: two to a few) is sorted
 * by insertion: V8's `sort` allocates its work state on every call (about 800 bytes, the
 * largest single allocation of a first execution), which a few compares do not need.
 * @internal
 */
export function sortInPlace<T>(list: T[], compare: (a: T, b: T) => number): T[] {
  const length = list.length;
  if (length > INSERTION_MAX) return list.sort(compare);
  for (let i = 1; i < length; i++) {
    const item = list[i] as T;
    let j = i - 1;
    // Strictly greater only: equal items keep their order (a stable sort's).
    while (j >= 0 && compare(list[j] as T, item) > 0) {
      list[j + 1] = list[j] as T;
      j--;
    }
    list[j + 1] = item;
  }
  return list;
}

/** Compares strings as `Array.prototype.sort` without a compare function does (UTF-16 code units). @internal */
export function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
