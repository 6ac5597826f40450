// Review round 13 (rev13client): key: 'content' with a body too large to encode. A real
// node:http server behind @idem/http on loopback (nothing reaches it).
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, IdemClientError } from '../src/index.js';
import { startHarness } from './support/harness.js';

describe("rev13 client: key: 'content' and a very large body", () => {
  // FIXED (was FINDING LOW): key: 'content' encodes the body as a string for deriveKey (UTF-8 text, or
  // base64 when it is not UTF-8). A binary body past about 400 MB (base64 past V8's longest
  // string, 0x1fffffe8 characters; text past about 512 MB) makes the call throw Node's bare
  // `Error: Cannot create a string longer than 0x1fffffe8 characters` (ERR_STRING_TOO_LONG), not
  // an IdemClientError: the documented codes (KEY_NOT_DERIVABLE for a body no key can come
  // from) do not cover it, and callers branching on `code` miss it. Nothing is sent. Fix: a
  // body that cannot be encoded is KEY_NOT_DERIVABLE (cause attached); the key of every body
  // that could be encoded before is unchanged.
  it('a 420 MiB binary body: KEY_NOT_DERIVABLE before anything is sent', {
    // 8 s alone; past 30 s once on CI's loaded lane (encoding 420 MiB). No time is judged.
    timeout: 120_000,
  }, async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({ key: 'content' });
    const body = new Uint8Array(420 * 1024 * 1024);
    body[0] = 0xff; // not UTF-8: encoded as base64
    const outcome = await idemFetch(`${h.url}/uploads`, { method: 'POST', body }).then(
      (response) => `answered ${response.status}`,
      (error: unknown) =>
        error instanceof IdemClientError
          ? error.code
          : `${(error as Error).name}: ${(error as Error).message}`,
    );
    expect(outcome).toBe('KEY_NOT_DERIVABLE');
    expect(h.server.seen.length).toBe(0);
  });
});
