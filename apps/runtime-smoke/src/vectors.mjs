// Derivations a runtime must compute exactly as Node does: stored records are found by these
// storage keys and matched by these fingerprints, whichever runtime wrote them.
const encoder = new TextEncoder();

/** Storage keys, fingerprints and derived keys of fixed inputs, by `core` (`@idem/core`). */
export function derivations(core) {
  return {
    storageKeys: [
      core.deriveStorageKey(['idem/http/v1', 'acct_1', 'POST /charges'], 'key-1'),
      core.deriveStorageKey(null, 'k'),
      core.deriveStorageKey({ tenant: 't', nested: { list: [1, 'two'] } }, '"quoted" key ~!'),
      core.deriveStorageKey(['ünï', { ключ: 'значение' }], 'k'),
      core.deriveStorageKey('x'.repeat(70_000), 'long scope, past the scratch buffer'),
    ],
    fingerprints: [
      core.fingerprint({
        method: 'post',
        route: '/charges',
        body: { b: [1, -0, 1e21, 0.1, 'x'], a: { z: null, y: true }, é: '\ud800' },
        extras: { query: '?a=1', 'content-type': 'application/json' },
      }),
      core.fingerprint({
        method: 'PUT',
        route: '/files',
        body: encoder.encode('raw \u00e9 bytes 😀'),
        extras: { query: '' },
      }),
      core.fingerprint({ extras: { 'header:x-v': null, 'extra:n': { b: [], a: {} }, z: 'ü' } }),
      core.fingerprint({ body: { text: '€'.repeat(5_000) } }),
      core.fingerprint({}),
    ],
    derivedKeys: [
      core.deriveKey({ user: 'u', prompt: 'p\n', model: ['m', 1] }, { prefix: 'p-' }),
      core.batchItemKey('batch-1', 7),
    ],
    generated: { v4: core.generateKey(), v7: core.generateKey({ version: 7 }) },
  };
}
