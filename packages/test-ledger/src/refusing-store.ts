/** The methods of an `IdempotencyStore` (`@idem/core`), as this package sees them. */
export interface StoreMethods {
  readonly capabilities: unknown;
  acquire(input: never): Promise<unknown>;
  complete(input: never): Promise<unknown>;
  release(input: never): Promise<unknown>;
  extend(input: never): Promise<unknown>;
  get(key: string): Promise<unknown>;
}

/**
 * `store` whose every `complete` is answered `not_owner` without reaching it (as after a
 * takeover: the owner-checked final write changes nothing), `onComplete` told of each; its
 * other methods are the store's own.
 */
export function refusingCompletes<S extends StoreMethods>(store: S, onComplete?: () => void): S {
  const refusing: StoreMethods = {
    capabilities: store.capabilities,
    acquire: store.acquire.bind(store),
    release: store.release.bind(store),
    extend: store.extend.bind(store),
    get: store.get.bind(store),
    complete: async () => {
      onComplete?.();
      return { ok: false, reason: 'not_owner' };
    },
  };
  return refusing as S;
}
