import { packageBuild } from '../../tsup.base.js';

// `splitting` for the CommonJS build too (ESM splits by default): the two entry points then
// share one copy of the modules they both use, as they do in ESM. Without it each `.cjs`
// entry carried its own copy of every shared class and module state, and an `instanceof`
// across them failed (a body error thrown by `@idem/http/node` and judged by `@idem/http`).
export default packageBuild({ entry: ['src/index.ts', 'src/node.ts'], splitting: true });
