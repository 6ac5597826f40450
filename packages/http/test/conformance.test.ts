import {
  describeHttpConformance,
  fetchDriver,
  memoryStores,
  redisStores,
  respondWithRoute,
  TENANT_HEADER,
} from '@idem/http-conformance';
import { type ScopeHint, withIdempotency } from '../src/index.js';

// The Web handler (withIdempotency) runs the same HTTP contract as every framework adapter.
describeHttpConformance('@idem/http withIdempotency', {
  stores: [memoryStores(), redisStores()],
  ...fetchDriver(({ options, routes }) =>
    withIdempotency((request) => respondWithRoute(routes, request), {
      ...options,
      // Undefined without the header: the suite checks the 500 no-principal answer.
      scope: (request) =>
        ({ principal: request.headers.get(TENANT_HEADER) ?? undefined }) as ScopeHint,
    }),
  ),
});
