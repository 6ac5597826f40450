import { nestDriver } from './scenario-app.js';
import { defrevSuite } from './defrev-kit.js';

// The conformance driver of nest-express/nest-fastify.test.ts: `@Idempotent()` routes, the
// module's default scope (principal from the guard-set request.user, from x-tenant). Nest
// documents scope as defaulted (README "Whose key is it?"), so no "scope required" check here.
defrevSuite({ name: 'nest-express', ...nestDriver('express') });
defrevSuite({ name: 'nest-fastify', ...nestDriver('fastify') });
