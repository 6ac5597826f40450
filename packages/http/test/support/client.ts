// Moved to @idem/http-conformance; kept only until the adapters' own tests import it from there.
export type { Exchange, SendOptions } from '@idem/http-conformance';
export { json, listening, send } from '@idem/http-conformance';
