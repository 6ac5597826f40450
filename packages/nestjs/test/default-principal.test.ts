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

/** Sets `request.user` to the JSON of the `x-user` header, as a guard would. */
@Injectable()
class UserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context
      .switchToHttp()
      .getRequest<{ headers: Record<string, unknown>; user?: unknown }>();
    const user = request.headers['x-user'];
    if (typeof user === 'string') request.user = JSON.parse(user);
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

    const post = (key: string, user: unknown) =>
      send(url, '/who', { key, body: { a: 1 }, headers: { 'x-user': JSON.stringify(user) } });

    /** The second user's request with the first's key runs on its own: no replay across them. */
    const separate = async (first: unknown, second: unknown) => {
      const key = `who-${randomUUID()}`;
      const a = await post(key, first);
      const b = await post(key, second);
      expect(a.status).toBe(201);
      expect(b.status).toBe(201);
      expect(b.headers['idempotent-replayed']).toBeUndefined();
      expect(b.body.toString()).not.toBe(a.body.toString());
    };

    it('the same subject from two issuers is two callers', async () => {
      await separate(
        { sub: '1234', iss: 'https://idp-a.example' },
        { sub: '1234', iss: 'https://idp-b.example' },
      );
    });

    it('an id and a numeric id of the same digits are two callers', async () => {
      await separate({ id: 42 }, { id: '42' });
    });

    it('the same caller with a refreshed token is one caller (the replay)', async () => {
      const key = `who-${randomUUID()}`;
      const a = await post(key, { sub: 's', iss: 'https://idp-a.example', iat: 1 });
      const b = await post(key, { sub: 's', iss: 'https://idp-a.example', iat: 2 });
      expect(a.status).toBe(201);
      expect(b.headers['idempotent-replayed']).toBe('true');
      expect(b.body.equals(a.body)).toBe(true);
    });
  },
);
