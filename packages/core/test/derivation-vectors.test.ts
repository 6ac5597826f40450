import * as core from '../src/index.js';
import { describeDerivationVectors } from './support/derivation-vectors.js';

// As this runtime loads core: on Node, node:crypto's SHA-256 and Buffer's UTF-8.
describeDerivationVectors('native node:crypto and Buffer', core);
