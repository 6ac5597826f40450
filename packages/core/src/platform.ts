/**
 * What the runtime offers beyond the Web platform, looked up without a static `node:` import,
 * so core loads unchanged where there is none (workerd without `nodejs_compat`, a browser).
 * Node >= 20.16, Bun, Deno and workerd with `nodejs_compat` hand out their built-in modules
 * synchronously through `process.getBuiltinModule`; Node 20.0–20.15, which has not got it,
 * by a dynamic import ({@link importNodeBuiltin}).
 */

/** The subset of `node:crypto` core uses. */
export interface NodeCrypto {
  /** One-shot digest (Node >= 20.12, Bun, Deno); absent on older runtimes. */
  hash?: (algorithm: string, data: Uint8Array, encoding: 'hex') => string;
  createHash(algorithm: string): {
    update(data: Uint8Array): { digest(encoding: 'hex'): string };
  };
}

/** The subset of Node's `Buffer` core uses (a `Buffer` is a `Uint8Array`). */
export interface NodeBufferClass {
  allocUnsafe(size: number): Uint8Array & { write(text: string, at: number, enc: 'utf8'): number };
  byteLength(text: string, enc: 'utf8'): number;
  from(text: string, enc: 'latin1'): Uint8Array;
}

type WithProcess = {
  process?: { getBuiltinModule?: (id: string) => unknown; versions?: { node?: unknown } };
};

/** Node's built-in module `id` where the runtime hands it out synchronously, else undefined. */
export function nodeBuiltin<T>(id: string): T | undefined {
  try {
    return (globalThis as WithProcess).process?.getBuiltinModule?.(id) as T | undefined;
  } catch {
    return undefined;
  }
}

/** Node's `Buffer` where the runtime has one as a global, else undefined. */
export function nodeBuffer(): NodeBufferClass | undefined {
  return (globalThis as { Buffer?: NodeBufferClass }).Buffer;
}

/**
 * Node's built-in module `id` by a dynamic `import()`, on Node without
 * `process.getBuiltinModule` (20.0–20.15) only; undefined anywhere else (nothing is tried
 * there). The promise never rejects: undefined when the import fails.
 */
export function importNodeBuiltin<T>(id: string): Promise<T | undefined> | undefined {
  const process = (globalThis as WithProcess).process;
  if (typeof process?.versions?.node !== 'string' || typeof process.getBuiltinModule === 'function')
    return undefined;
  // A specifier that is not a literal: bundlers for the Web (esbuild for workerd, Vite,
  // webpack) leave the import alone instead of trying to resolve a `node:` module.
  return import(/* webpackIgnore: true */ /* @vite-ignore */ id).then(
    (module: T) => module,
    () => undefined,
  );
}

/**
 * Whether `JSON.stringify` makes a text of one byte a character whenever every character is
 * Latin-1, whatever strings the value holds: V8 12 and later (Node 22+, Deno). V8 11 (Node 20)
 * gives a two-byte text as soon as the value holds a string V8 keeps at two bytes a character
 * (a slice of a string that had a character above U+00FF, a UTF-16 decode), even an ASCII one;
 * other engines are not known to. Read once.
 */
export const stringifiesOneByte: boolean = (() => {
  const versions = (globalThis as { process?: { versions?: Record<string, unknown> } }).process
    ?.versions;
  // Bun reports a V8 version for compatibility but runs JavaScriptCore.
  if (typeof versions?.v8 !== 'string' || versions.bun !== undefined) return false;
  return Number.parseInt(versions.v8, 10) >= 12;
})();
