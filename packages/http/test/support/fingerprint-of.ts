import { bodyFromBytes } from '../../src/index.js';
import type { FingerprintOptions } from '../../src/options.js';
import { fingerprintOf } from '../../src/request-fingerprint.js';

const encoder = new TextEncoder();

/**
 * The fingerprint of `POST /x` (no query) whose body is `body` (bytes, or text as UTF-8) read
 * as the middleware reads bytes ({@link bodyFromBytes}) under `contentType`.
 */
export function fingerprintOfBody(
  body: Uint8Array | string,
  contentType: string | undefined,
  options?: FingerprintOptions<null>,
): string {
  const bytes = typeof body === 'string' ? encoder.encode(body) : body;
  return fingerprintOf<null>(
    {
      native: null,
      method: 'POST',
      url: '/x',
      header: (name) => (name === 'content-type' ? contentType : undefined),
      readBody: async () => ({ kind: 'none' }),
    },
    'POST',
    { pathname: '/x', search: '' },
    bodyFromBytes(bytes, contentType),
    options,
  ) as string;
}
