/**
 * Shared by the mutation-audit tests (`mutaudit-*.test.ts`) and others: two clients of one
 * target (one for the stores under test, one for raw reads), a fresh random key prefix per
 * test, and every key under the prefixes used deleted after each test.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { type Client, deletePrefix, randomPrefix, standalone, type Target } from './targets.js';

/** A fresh owner token. */
export const owner = (): string => randomBytes(16).toString('base64url');

export interface StandaloneSession {
  /** The client the stores under test use. */
  readonly client: Client;
  /** A second client, for raw reads and writes. */
  readonly raw: Client;
  /** A new random key prefix, deleted after the test. */
  prefix(): string;
}

/** Registers the hooks (call at the top of a test file) and gives the clients. */
export function standaloneSession(): StandaloneSession {
  return targetSession(standalone);
}

/**
 * {@link standaloneSession} on `target`: registers the hooks (call at the top of a test file
 * or of a `describe`) and gives the clients.
 */
export function targetSession(target: Target): StandaloneSession {
  let client: Client | undefined;
  let raw: Client | undefined;
  const used: string[] = [];
  beforeAll(async () => {
    client = await target.connect();
    raw = await target.connect();
  });
  afterEach(async () => {
    for (const prefix of used.splice(0)) if (raw) await deletePrefix(raw, prefix);
  });
  afterAll(() => {
    client?.disconnect();
    raw?.disconnect();
  });
  const connected = (c: Client | undefined): Client => {
    if (!c) throw new Error('standaloneSession: not connected yet (use it inside a test)');
    return c;
  };
  return {
    get client() {
      return connected(client);
    },
    get raw() {
      return connected(raw);
    },
    prefix() {
      const prefix = randomPrefix();
      used.push(prefix);
      return prefix;
    },
  };
}
