import { describeRedisConformance } from './conformance-suite.js';
import { cluster } from './targets.js';

describeRedisConformance(cluster);
