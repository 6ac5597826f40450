import { packageBuild } from '../../tsup.base.js';

// The library entry (runCli, for embedding and tests) and the `idem` executable.
export default packageBuild({ entry: ['src/index.ts', 'src/bin.ts'] });
