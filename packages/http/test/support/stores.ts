// Moved to @idem/http-conformance; kept only until the adapters' own tests import it from there.
export type { SpiedStore } from '@idem/http-conformance';
export { downStore, spyStore } from '@idem/http-conformance';
