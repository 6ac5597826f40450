import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10b: @idem/http refuses an option name it does not know; the plugin hands it its
// options without its own (bodyTimeoutMs) and those Fastify's register reads (logLevel...).

describe('rev10b fastify options', () => {
  it("the plugin's own and register's options are taken, plugin-wide and per route", async () => {
    const app = Fastify();
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      bodyTimeoutMs: 5_000,
      logLevel: 'warn',
      onWarning: () => {},
    } as Parameters<typeof idempotency>[1]);
    app.post('/x', { config: { idempotency: { bodyTimeoutMs: 1_000 } } }, async () => ({
      ok: true,
    }));
    await app.ready();
    const first = await app.inject({
      method: 'POST',
      url: '/x',
      headers: { 'idempotency-key': 'k1', 'content-type': 'application/json' },
      payload: '{}',
    });
    expect(first.statusCode).toBe(200);
    await app.close();
  });

  it('a misspelt option is refused at registration, naming it', async () => {
    const app = Fastify();
    app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      retention: 5_000,
    } as Parameters<typeof idempotency>[1]);
    await expect(app.ready()).rejects.toThrow(/retention .*retentionMs/);
    await app.close().catch(() => {});
  });
});
