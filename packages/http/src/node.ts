export type { RecordServerResponseOptions } from './node-response.js';
export {
  headersOf,
  headerValue,
  recordServerResponse,
  requestUrl,
  sendWebResponse,
} from './node-response.js';
