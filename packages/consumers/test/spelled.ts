// Exhaustive checks of key mappings (fast-check is not a dependency of this package).

/** Every string of 1..`most` pieces. */
export function spelled(pieces: string[], most: number): string[] {
  let last = [''];
  const all: string[] = [];
  for (let n = 1; n <= most; n++) {
    last = last.flatMap((head) => pieces.map((piece) => head + piece));
    all.push(...last);
  }
  return all;
}
