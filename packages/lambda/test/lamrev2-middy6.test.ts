import { lamrev2Suite } from './lamrev2-suite.js';
import { middyVersion } from './middy-versions.js';

// The lamrev2 suite (lamrev2-suite.ts) on Middy 6: a file a major, so that both run at once.
lamrev2Suite(middyVersion(6));
