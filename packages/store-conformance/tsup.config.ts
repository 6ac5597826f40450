import { packageBuild } from '../../tsup.base.js';

// ESM only: the suite runs inside vitest, which cannot be loaded with `require`.
export default packageBuild({ format: ['esm'], external: ['vitest', 'fast-check', '@idem/core'] });
