import { packageBuild } from '../../tsup.base.js';

export default packageBuild({ external: ['vitest', 'fast-check', '@idem/core'] });
