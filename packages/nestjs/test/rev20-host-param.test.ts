// Review round 20 (advedge): a controller whose host option has a parameter
// (`@Controller({ host: ':tenant.example.test' })`), the usual shape of subdomain
// multi-tenancy, serves every tenant with one handler. The operation named the host option as
// written (nest13 review), the same for every tenant, so the default principal (`request.user.id`)
// was all that kept two tenants apart: where user ids are per tenant (user 7 of acme, user 7
// of globex), a key taken on acme's host was answered on globex's host with acme's recorded
// response (its body), and globex's request never ran.
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type CanActivate,
  Controller,
  type ExecutionContext,
  HostParam,
  Injectable,
  Module,
  Post,
  UseGuards,
} from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

/** Every tenant's first user is user 7: ids are per tenant (the tenant is the host's). */
@Injectable()
class TenantUserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    context.switchToHttp().getRequest<{ user?: unknown }>().user = { id: 7 };
    return true;
  }
}

const runs: string[] = [];

@Controller({ host: ':tenant.example.test', path: 'tenanted' })
@UseGuards(TenantUserGuard)
class TenantController {
  @Post()
  @Idempotent()
  pay(@HostParam('tenant') tenant: string) {
    runs.push(tenant);
    return { tenant, secret: `${tenant}-only` };
  }
}

@Controller({ host: /^(?<shop>[a-z]+)\.shops\.test$/, path: 'shopped' })
@UseGuards(TenantUserGuard)
class ShopController {
  @Post()
  @Idempotent()
  pay(@HostParam('shop') shop: string) {
    runs.push(shop);
    return { shop };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [TenantController, ShopController],
})
class TenantModule {}

for (const platform of ['express', 'fastify'] as Platform[]) {
  describe(`@idem/nestjs (rev20): host parameters on ${platform}`, () => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, TenantModule));
    });
    afterAll(() => close());

    it('never answers one tenant with what another tenant recorded under the same key', async () => {
      const k = `rev20-host-${randomUUID()}`;
      const acme = await send(url, '/tenanted', {
        key: k,
        body: { amount: 1 },
        headers: { host: 'acme.example.test' },
      });
      expect(json(acme)).toMatchObject({ tenant: 'acme' });
      const globex = await send(url, '/tenanted', {
        key: k,
        body: { amount: 1 },
        headers: { host: 'globex.example.test' },
      });
      expect(globex.headers['idempotent-replayed']).toBeUndefined();
      expect(json(globex)).toMatchObject({ tenant: 'globex' });
      // The same tenant again: its own answer replayed.
      const again = await send(url, '/tenanted', {
        key: k,
        body: { amount: 1 },
        headers: { host: 'acme.example.test' },
      });
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(json(again)).toMatchObject({ tenant: 'acme' });
    });

    it('keeps the hosts a RegExp host option matches apart', async () => {
      const k = `rev20-shop-${randomUUID()}`;
      const one = await send(url, '/shopped', {
        key: k,
        body: {},
        headers: { host: 'one.shops.test' },
      });
      expect(json(one)).toMatchObject({ shop: 'one' });
      const two = await send(url, '/shopped', {
        key: k,
        body: {},
        headers: { host: 'two.shops.test' },
      });
      expect(two.headers['idempotent-replayed']).toBeUndefined();
      expect(json(two)).toMatchObject({ shop: 'two' });
    });
  });
}
