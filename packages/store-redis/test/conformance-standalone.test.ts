import { describeRedisConformance } from './conformance-suite.js';
import { standalone } from './targets.js';

describeRedisConformance(standalone);
