import { describeHttpConformance, memoryStores, redisStores } from '@idem/http-conformance';
import { nestDriver } from './scenario-app.js';

// The principal is the default one: `request.user` as the app's guard set it.
describeHttpConformance('nest on platform-express', {
  stores: [memoryStores(), redisStores()],
  ...nestDriver('express'),
});
