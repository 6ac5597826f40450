// Review round 13 (rev13client): keys that the bare header form cannot carry. A real
// node:http server behind @idem/http on loopback.
import { isIdemError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';
import { postJson, startHarness } from './support/harness.js';

describe("rev13 client: keyFormat 'bare' and quotes", () => {
  // FIXED (was FINDING LOW): rev10 made keyFormat 'bare' refuse a key with a space or tab at either end
  // (the wire drops them, so two keys became one). A key that starts with a double quote is the
  // same trap: sent bare, `"order-7"` (a valid key: printable ASCII) is read by the server as a
  // Structured Field String, the key `order-7`. Two logical calls whose key function returns
  // `"order-7"` and `order-7` (two keys, as the key-function contract asks) reach the server as
  // one key: the second is answered with the first's outcome (`Idempotent-Replayed: true`) and
  // never runs. Fix: keyFormat 'bare' refuses (InvalidKeyError) a key that starts with `"`, as
  // it refuses the edge spaces.
  it("keyFormat 'bare': a key starting with a double quote never reaches the server as another key", {
    timeout: 10_000,
  }, async () => {
    const h = await startHarness();
    let n = 0;
    const idemFetch = createIdempotentFetch({
      keyFormat: 'bare',
      key: () => (n++ === 0 ? '"order-7"' : 'order-7'),
    });
    let refused = false;
    let replayed: string | null = null;
    try {
      const first = await idemFetch(`${h.url}/charges`, postJson({ item: 'quoted' }));
      await first.text();
    } catch (error) {
      // A clear refusal of a key the bare form cannot carry is right too.
      refused = isIdemError(error);
    }
    const second = await idemFetch(`${h.url}/charges`, postJson({ item: 'quoted' }));
    await second.text();
    replayed = second.headers.get('idempotent-replayed');
    const seen = {
      refused,
      runs: h.app.executions.get('quoted'),
      replayed,
      keysAtServer: h.server.seen.map((r) => r.key),
    };
    // Before a fix: keys at the server `"order-7"` and `order-7` (one key), runs 1, replayed.
    expect(refused || seen.runs === 2, JSON.stringify(seen)).toBe(true);
  });
});
