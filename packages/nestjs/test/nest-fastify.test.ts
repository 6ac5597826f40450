import { describeHttpConformance, memoryStores, redisStores } from '@idem/http-conformance';
import { nestDriver } from './scenario-app.js';

// The principal is the default one: `request.user` as the app's guard set it. The interceptor
// does not depend on the store; CI runs the Redis store on platform-express only (time budget).
describeHttpConformance('nest on platform-fastify', {
  stores: process.env.CI ? [memoryStores()] : [memoryStores(), redisStores()],
  ...nestDriver('fastify'),
});
