export { ATTR, METRIC, SPAN } from './attributes.js';
export type { OtelListenerOptions } from './otel-listener.js';
export { createOtelListener, OTHER_OPERATION } from './otel-listener.js';
