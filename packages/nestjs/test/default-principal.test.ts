import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type CanActivate,
  Controller,
  type ExecutionContext,
  Injectable,
  Module,
  Post,
  UseGuards,
} from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent, principalFromUser } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

// The module's default scope takes the principal from the guard-set `request.user`. Two
// different callers must never share a key space through it: a replay of one caller's answer
// to another leaks it (the fingerprint is the request, the same for both).

/** Sets `request.user` from the `x-user` header's JSON; `x-user-proto` becomes its prototype. */
@Injectable()
class UserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context
      .switchToHttp()
      .getRequest<{ headers: Record<string, unknown>; user?: unknown }>();
    const user = request.headers['x-user'];
    const proto = request.headers['x-user-proto'];
    if (typeof user !== 'string') return true;
    const own = JSON.parse(user) as object;
    request.user =
      typeof proto === 'string' ? Object.assign(Object.create(JSON.parse(proto)), own) : own;
    return true;
  }
}

let runs = 0;
@Controller('who')
@UseGuards(UserGuard)
class WhoController {
  @Post()
  @Idempotent()
  who() {
    runs++;
    return { run: runs };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [WhoController],
})
class AppModule {}

describe('principalFromUser', () => {
  it('is the id, else the subject; a subject with its issuer (OpenID Connect: unique per issuer) names both', () => {
    expect(principalFromUser({ id: 'u1', sub: 's1', iss: 'https://a' })).toBe('u1');
    expect(principalFromUser({ id: 7 })).toBe(7);
    expect(principalFromUser({ sub: 's1' })).toBe('s1');
    expect(principalFromUser({ sub: 's1', iss: 'https://a' })).toEqual({
      iss: 'https://a',
      sub: 's1',
    });
    expect(principalFromUser({ sub: 's1', iss: '' })).toBe('s1');
    expect(principalFromUser({})).toBeUndefined();
  });

  // rv21 review: was FINDING (LOW): an `iss` that is not a string (a number, an object) was
  // ignored, so the same subject from issuers 1 and 2 shared one key space. Now such a user
  // has no default principal (500 no-principal): nothing is shared.
  it('an issuer that is not a string is never dropped silently (no principal rather than the bare subject)', () => {
    for (const iss of [1, 2, true, { url: 'https://a' }, ['https://a'], new URL('https://a')])
      expect(principalFromUser({ sub: 's1', iss })).toBeUndefined();
  });

  it('an inherited (prototype) iss and sub count as the user own ones', () => {
    const user = Object.assign(Object.create({ iss: 'https://a', sub: 's1' }), {});
    expect(principalFromUser(user)).toEqual({ iss: 'https://a', sub: 's1' });
  });

  it("a user's toJSON plays no part: the principal is built from iss and sub only", () => {
    const user = { sub: 's1', iss: 'https://a', toJSON: () => ({}) };
    expect(principalFromUser(user)).toEqual({ iss: 'https://a', sub: 's1' });
  });
});

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs default principal on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, AppModule));
    });
    afterAll(() => close());

    const post = (key: string, user: unknown, proto?: unknown) =>
      send(url, '/who', {
        key,
        body: { a: 1 },
        headers: {
          'x-user': JSON.stringify(user),
          ...(proto === undefined ? {} : { 'x-user-proto': JSON.stringify(proto) }),
        },
      });

    /**
     * The second caller's request with the first's key never gets the first's answer: each
     * runs (201), or is refused for a caller the default cannot name (500 no-principal).
     */
    const separate = async (first: [unknown, unknown?], second: [unknown, unknown?]) => {
      const key = `who-${randomUUID()}`;
      const a = await post(key, ...first);
      const b = await post(key, ...second);
      expect([201, 500]).toContain(a.status);
      expect([201, 500]).toContain(b.status);
      expect(b.headers['idempotent-replayed']).toBeUndefined();
      if (a.status === 201) expect(b.body.toString()).not.toBe(a.body.toString());
      return [a.status, b.status];
    };

    it('the same subject from two issuers is two callers', async () => {
      // Both run: the pair is a principal, not a refusal.
      expect(
        await separate(
          [{ sub: '1234', iss: 'https://idp-a.example' }],
          [{ sub: '1234', iss: 'https://idp-b.example' }],
        ),
      ).toEqual([201, 201]);
    });

    it('an id and a numeric id of the same digits are two callers', async () => {
      expect(await separate([{ id: 42 }], [{ id: '42' }])).toEqual([201, 201]);
    });

    it('the same caller with a refreshed token is one caller (the replay)', async () => {
      const key = `who-${randomUUID()}`;
      const a = await post(key, { sub: 's', iss: 'https://idp-a.example', iat: 1 });
      const b = await post(key, { sub: 's', iss: 'https://idp-a.example', iat: 2 });
      expect(a.status).toBe(201);
      expect(b.headers['idempotent-replayed']).toBe('true');
      expect(b.body.equals(a.body)).toBe(true);
    });

    // rv21 review: attacks on isolation through the default (see principalFromUser above).
    it('the same subject with two numeric issuers is never one caller', async () => {
      await separate([{ sub: '1234', iss: 1 }], [{ sub: '1234', iss: 2 }]);
    });

    it('the same subject with an object issuer and with none is never one caller', async () => {
      await separate([{ sub: '1234', iss: { host: 'idp-a' } }], [{ sub: '1234' }]);
    });

    it('the same subject with an inherited issuer and with another own issuer: two callers', async () => {
      await separate(
        [{ sub: '1234' }, { iss: 'https://idp-a.example' }],
        [{ sub: '1234', iss: 'https://idp-b.example' }],
      );
    });

    it('a string issuer is not the same as a subject spelled like the pair', async () => {
      await separate(
        [{ sub: '1234', iss: 'https://idp-a.example' }],
        [{ sub: JSON.stringify({ iss: 'https://idp-a.example', sub: '1234' }) }],
      );
    });

    it('a numeric subject and a string subject under one issuer are two callers', async () => {
      await separate([{ sub: 7, iss: 'https://a' }], [{ sub: '7', iss: 'https://a' }]);
    });
  },
);
