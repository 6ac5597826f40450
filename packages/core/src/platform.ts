/**
 * What the runtime offers beyond the Web platform, looked up without a static `node:` import,
 * so core loads unchanged where there is none (workerd without `nodejs_compat`, a browser).
 * Node >= 20.16, Bun, Deno and workerd with `nodejs_compat` hand out their built-in modules
 * synchronously through `process.getBuiltinModule`.
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
}

type WithProcess = { process?: { getBuiltinModule?: (id: string) => unknown } };

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
