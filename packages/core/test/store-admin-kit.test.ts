import { describe, expect, it } from 'vitest';
import {
  type AdminPrimitives,
  createStoreAdmin,
  InvalidInputError,
  StoreUnavailableError,
} from '../src/index.js';

const record = {
  status: 'in_progress' as const,
  fingerprint: 'fp',
  owner: 'o1',
  fence: '3',
  leaseUntil: '2000',
  expiresAt: '5000',
  outcomeBytes: null,
};

function admin(over: Partial<AdminPrimitives> = {}) {
  const owners: string[] = [];
  const built = createStoreAdmin({
    read: async () => ({ now: '1000', record }),
    forceRelease: async (_key, owner) => {
      owners.push(owner);
      return { fence: 4n, previousOwner: new TextEncoder().encode('o1') };
    },
    delete: async (_key, owner) => {
      owners.push(owner);
      return true;
    },
    ...over,
  });
  return { built, owners };
}

describe('createStoreAdmin (adapter kit)', () => {
  it('builds the answers from what the service answered (decimal text, bigint, bytes)', async () => {
    const { built, owners } = admin();
    expect(await built.inspect('k')).toEqual({
      status: 'in_progress',
      fingerprint: 'fp',
      owner: 'o1',
      fence: 3,
      leaseUntil: 2000,
      expiresAt: 5000,
      outcomeBytes: 0,
      now: 1000,
    });
    expect(await built.forceRelease('k')).toEqual({ ok: true, fence: 4, previousOwner: 'o1' });
    expect(await built.delete('k')).toEqual({ deleted: true });
    expect(owners).toHaveLength(2);
    expect(new Set(owners).size).toBe(2);
    for (const owner of owners) expect(owner).toMatch(/^idem-admin:/);
  });

  it('hides an expired record, passes the refusals through', async () => {
    const { built } = admin({
      read: async () => ({ now: 5000, record }),
      forceRelease: async () => 'not_in_progress',
    });
    expect(await built.inspect('k')).toBeUndefined();
    expect(await built.forceRelease('k')).toEqual({ ok: false, reason: 'not_in_progress' });
  });

  it('refuses a bad key before any primitive runs, and a bad number the service answered', async () => {
    let called = false;
    const { built } = admin({
      checkKey: (key) => {
        if (key.length !== 3) throw new InvalidInputError('three');
      },
      read: async () => {
        called = true;
        return { now: 1, record: { ...record, fence: 'x' } };
      },
    });
    await expect(built.inspect(42 as unknown as string)).rejects.toBeInstanceOf(InvalidInputError);
    await expect(built.inspect('k')).rejects.toBeInstanceOf(InvalidInputError);
    expect(called).toBe(false);
    // The kit's own check, whatever the store's: empty and malformed keys, on every call.
    const { built: plain, owners } = admin({
      read: async () => {
        called = true;
        return { now: 1 };
      },
    });
    for (const bad of ['', 'a\uD800b']) {
      await expect(plain.inspect(bad)).rejects.toBeInstanceOf(InvalidInputError);
      await expect(plain.forceRelease(bad)).rejects.toBeInstanceOf(InvalidInputError);
      await expect(plain.delete(bad)).rejects.toBeInstanceOf(InvalidInputError);
    }
    expect(called).toBe(false);
    expect(owners).toEqual([]);
    await expect(built.inspect('abc')).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  it('with error rules, a failing primitive becomes a typed store error with its cause', async () => {
    const cause = new Error('ECONNRESET');
    const built = createStoreAdmin({
      read: async () => {
        throw cause;
      },
      forceRelease: async () => 'not_found',
      delete: async () => false,
      errors: { service: 'Test' },
    });
    await expect(built.inspect('k')).rejects.toMatchObject({
      code: 'STORE_UNAVAILABLE',
      cause,
      message: expect.stringContaining('Test inspect failed'),
    });
  });

  it('passes a checked expectation to forceRelease and answers changed with the current owner and fence', async () => {
    const seen: unknown[] = [];
    const { built } = admin({
      forceRelease: async (_key, _owner, expected) => {
        seen.push(expected);
        return { changed: true, owner: new TextEncoder().encode('o2'), fence: '4' };
      },
    });
    expect(await built.forceRelease('k', { owner: 'o1', fence: 3 })).toEqual({
      ok: false,
      reason: 'changed',
      owner: 'o2',
      fence: 4,
    });
    await built.forceRelease('k', { fence: 3 });
    await built.forceRelease('k', { owner: 'o1', fence: undefined });
    expect(seen).toEqual([{ owner: 'o1', fence: 3 }, { fence: 3 }, { owner: 'o1' }]);
  });

  it('without an expectation (or an empty one) the primitive gets none: behaviour as before', async () => {
    const seen: unknown[] = [];
    const { built } = admin({
      forceRelease: async (_key, _owner, expected) => {
        seen.push(expected);
        return { fence: 4, previousOwner: 'o1' };
      },
    });
    expect(await built.forceRelease('k')).toEqual({ ok: true, fence: 4, previousOwner: 'o1' });
    expect(await built.forceRelease('k', {})).toEqual({ ok: true, fence: 4, previousOwner: 'o1' });
    expect(seen).toEqual([undefined, undefined]);
  });

  it('refuses a bad expectation before any primitive runs', async () => {
    let called = false;
    const { built } = admin({
      forceRelease: async () => {
        called = true;
        return 'not_found';
      },
    });
    for (const bad of [
      null,
      'o1',
      { owner: '' },
      { owner: 7 },
      { fence: -1 },
      { fence: 1.5 },
      { fence: '3' },
      { fence: 2 ** 53 },
    ])
      await expect(
        built.forceRelease('k', bad as never),
        JSON.stringify(bad),
      ).rejects.toBeInstanceOf(InvalidInputError);
    expect(called).toBe(false);
  });

  it('fails loudly when a store released another execution than expected, or answered changed for the expected one', async () => {
    const { built } = admin({ forceRelease: async () => ({ fence: 4, previousOwner: 'o2' }) });
    await expect(built.forceRelease('k', { owner: 'o1' })).rejects.toThrow(
      /does not honour forceRelease's expectation/,
    );
    await expect(built.forceRelease('k', { fence: 2 })).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    expect(await built.forceRelease('k', { owner: 'o2', fence: 3 })).toEqual({
      ok: true,
      fence: 4,
      previousOwner: 'o2',
    });
    const { built: confused } = admin({
      forceRelease: async () => ({ changed: true, owner: 'o1', fence: 3 }),
    });
    await expect(confused.forceRelease('k', { owner: 'o1', fence: 3 })).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
  });

  it('passes a checked expectation to delete and answers changed with the current status, owner and fence', async () => {
    const seen: unknown[] = [];
    const { built } = admin({
      delete: async (_key, _owner, expected) => {
        seen.push(expected);
        return expected === undefined
          ? true
          : {
              changed: true,
              status: 'in_progress',
              owner: new TextEncoder().encode('o2'),
              fence: '4',
            };
      },
    });
    const expected = { status: 'released' as const, owner: 'o1', fence: 3 };
    expect(await built.delete('k', expected)).toEqual({
      deleted: false,
      reason: 'changed',
      status: 'in_progress',
      owner: 'o2',
      fence: 4,
    });
    await built.delete('k', { status: 'completed', fence: undefined });
    // Without one (or an empty one) the primitive gets none: the answer as before.
    expect(await built.delete('k')).toEqual({ deleted: true });
    expect(await built.delete('k', {})).toEqual({ deleted: true });
    expect(seen).toEqual([expected, { status: 'completed' }, undefined, undefined]);
  });

  it('forceRelease takes no status: one given is not passed on (it only releases what is in progress)', async () => {
    const seen: unknown[] = [];
    const { built } = admin({
      forceRelease: async (_key, _owner, expected) => {
        seen.push(expected);
        return { fence: 4, previousOwner: 'o1' };
      },
    });
    await built.forceRelease('k', { status: 'completed', owner: 'o1' } as never);
    await built.forceRelease('k', { status: 'completed' } as never);
    expect(seen).toEqual([{ owner: 'o1' }, undefined]);
  });

  it('refuses a bad delete expectation before any primitive runs', async () => {
    let called = false;
    const { built } = admin({
      delete: async () => {
        called = true;
        return false;
      },
    });
    for (const bad of [
      null,
      'released',
      { status: 'expired' },
      { status: 3 },
      { status: '' },
      { owner: '' },
      { owner: 7 },
      { fence: -1 },
      { fence: 1.5 },
      { fence: '3' },
    ])
      await expect(built.delete('k', bad as never), JSON.stringify(bad)).rejects.toBeInstanceOf(
        InvalidInputError,
      );
    expect(called).toBe(false);
  });

  it('fails loudly when a store answers changed for the record expected, or a status no record has', async () => {
    const { built: confused } = admin({
      delete: async () => ({ changed: true, status: 'completed', owner: 'o1', fence: 3 }),
    });
    await expect(
      confused.delete('k', { status: 'completed', owner: 'o1', fence: 3 }),
    ).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await confused.delete('k', { status: 'released' })).toEqual({
      deleted: false,
      reason: 'changed',
      status: 'completed',
      owner: 'o1',
      fence: 3,
    });
    const { built: garbled } = admin({
      delete: async () => ({ changed: true, status: 'gone' as never, owner: 'o1', fence: 3 }),
    });
    await expect(garbled.delete('k', { fence: 2 })).rejects.toThrow(/bad status: gone/);
  });
});
