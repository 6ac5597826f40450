export { ATTR, METRIC, SPAN } from './attributes.js';
export type { OtelListenerOptions } from './otel-listener.js';
export { createOtelListener } from './otel-listener.js';
