export type { Exchange, GotReply, SendOptions } from './client.js';
export { json, listening, postGot, send } from './client.js';
export { describeHttpConformance } from './describe.js';
export type { FetchHandler } from './fetch-driver.js';
export { fetchDriver, replyToResponse, respondWithRoute } from './fetch-driver.js';
export type { Scenario, ScenarioContext } from './kit.js';
export { PROBLEM, RECORDED_HEADERS, REPLAYED } from './kit.js';
export type { LastEventIdApp } from './last-event-id.js';
export { describeLastEventIdBytes, LAST_EVENT_ID_EVENTS } from './last-event-id.js';
export type { LateStartProbe } from './late-start.js';
export { lateStartProbe } from './late-start.js';
export type { LeftBeforeHeadApp, LeftBeforeHeadProbe } from './left-before-head.js';
export {
  describeLeftBeforeHead,
  leftBeforeHeadProbe,
  silentAfterLeaving,
} from './left-before-head.js';
export type { LivePace, LivePaceResult } from './live-pace.js';
export { livePace } from './live-pace.js';
export type {
  ConformanceAdapterOptions,
  FrameworkDriver,
  HttpConformanceOptions,
  RunningApp,
  ScenarioAppConfig,
} from './options.js';
export { TENANT_HEADER } from './options.js';
export type { OuterTimeoutApp, OuterTimeoutProbe } from './outer-timeout.js';
export { describeOuterTimeout, outerTimeoutProbe } from './outer-timeout.js';
export type { H2Answer, RawFraming, RawResponse } from './raw-http.js';
export {
  h2Post,
  rawBodyText,
  rawExchange,
  rawFraming,
  rawIsReplay,
  rawPost,
  rawResponse,
  rawStatusLine,
} from './raw-http.js';
export type { ReasonPhraseApp, ReasonPhraseCase } from './reason-phrase.js';
export { describeReasonPhrase } from './reason-phrase.js';
export type { Behaviour, BehaviourInput, Reply } from './routes.js';
export {
  binaryPayload,
  createRoutes,
  RECORDED_HEADER_VALUES,
  SSE_EVENTS,
  streamChunk,
} from './routes.js';
export { runScenario } from './run.js';
export { httpScenarios } from './scenarios/index.js';
export type { SpiedStore, StoreFaults, StoreKind } from './stores.js';
export { downStore, memoryStores, redisStores, spyStore } from './stores.js';
export type { FramingApp } from './upstream-framing.js';
export {
  describeHeadReplay,
  describeUpstreamFraming,
  framingAppOptions,
} from './upstream-framing.js';
export type { WaitClientGoneApp, WaitClientGoneProbe } from './wait-client-gone.js';
export { describeWaitClientGone, WAIT_CLIENT_GONE_WAIT } from './wait-client-gone.js';
