/**
 * The README examples, taken from the READMEs at test time so that they cannot drift: the
 * first ```ts block of each package's README is the example. What this file adds is only
 * what a README leaves to the reader (an epilogue that calls a function the example
 * defines, the service it talks to) and how the test drives and checks it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export type ExampleDriver = 'script' | 'express' | 'fastify' | 'hono' | 'koa' | 'nestjs' | 'vitest';

export interface ExampleSpec {
  /** Folder under packages/. */
  dir: string;
  driver: ExampleDriver;
  /** TypeScript appended after the example (inside the CJS wrapper too). */
  epilogue?: string;
  /** Lines the run MUST print (each a substring of stdout). */
  expectOutput?: string[];
  /**
   * Peer sets where the CJS form (and node10) is compiled and run; default: every set. For
   * examples whose peers' newest major ships ESM only (Nest 12), which CommonJS cannot import.
   */
  cjsIn?: ('latest' | 'floor')[];
  /** Type-checked under `moduleResolution: node10` as CJS too. */
  node10: boolean;
  /** Needs a service: the test provides it through the environment. */
  service?: 'redis' | 'postgres' | 'dynamodb' | 'idempotent-api' | 'rabbitmq';
}

export const EXAMPLES: ExampleSpec[] = [
  {
    dir: 'cli',
    driver: 'script',
    epilogue: 'console.log("pack-check:", code, typeof EXIT.ok);',
    // A fresh key of nobody's: the store answers "no record" (exit 3) after a real round trip.
    expectOutput: ['no record for order-7', 'pack-check: 3 number'],
    node10: true,
    service: 'redis',
  },
  {
    dir: 'store-memory',
    driver: 'script',
    epilogue: 'console.log("pack-check:", JSON.stringify(value), replayed);',
    expectOutput: ['pack-check: {"ok":true} false'],
    node10: true,
  },
  {
    dir: 'core',
    driver: 'script',
    epilogue: [
      "const first = await charge('tenant-1', 'order-42', { amount: 500 });",
      "const retry = await charge('tenant-1', 'order-42', { amount: 500 });",
      'console.log("pack-check:", first.chargeId === retry.chargeId, first.replayed, retry.replayed, payments.calls);',
    ].join('\n'),
    expectOutput: ['pack-check: true false true 1'],
    node10: true,
  },
  {
    dir: 'http',
    driver: 'script',
    epilogue: [
      'const send = () => createCharge(new Request("http://localhost/charges", {',
      '  method: "POST",',
      '  headers: { "idempotency-key": \'"order-42"\', "content-type": "application/json", "x-account-id": "acct_1" },',
      '  body: JSON.stringify({ amount: 100 }),',
      '}));',
      'const first = await send();',
      'const retry = await send();',
      'console.log("pack-check:", first.status, retry.status, retry.headers.get("idempotent-replayed"), (await first.text()) === (await retry.text()));',
    ].join('\n'),
    expectOutput: ['pack-check: 201 201 true true'],
    node10: true,
  },
  {
    dir: 'client',
    driver: 'script',
    service: 'idempotent-api',
    epilogue: 'console.log("pack-check:", response.status, info?.attempts, typeof info?.key);',
    expectOutput: ['pack-check: 201 1 string'],
    node10: true,
  },
  { dir: 'express', driver: 'express', node10: true },
  { dir: 'fastify', driver: 'fastify', node10: true },
  { dir: 'hono', driver: 'hono', node10: true },
  {
    dir: 'store-redis',
    driver: 'script',
    service: 'redis',
    expectOutput: ['true true'],
    node10: true,
  },
  {
    dir: 'store-postgres',
    driver: 'script',
    service: 'postgres',
    epilogue: 'await pool.end();',
    expectOutput: ['ch_1 true'],
    node10: true,
  },
  {
    dir: 'store-dynamodb',
    driver: 'script',
    service: 'dynamodb',
    epilogue: 'client.destroy();',
    expectOutput: ['true true'],
    node10: true,
  },
  { dir: 'koa', driver: 'koa', node10: true },
  // Nest 12 is ESM only: CommonJS apps are on Nest 11, the floor.
  { dir: 'nestjs', driver: 'nestjs', node10: true, cjsIn: ['floor'] },
  {
    dir: 'lambda',
    driver: 'script',
    service: 'dynamodb',
    // A Lambda handler cannot serve: it is called with an API Gateway event (a JWT
    // authorizer's subject: the scope) and a context, then retried with the same order
    // (another traceId, outside the fingerprint); another caller's same orderId runs apart.
    epilogue: [
      'await store.ensureTable({ pollMs: 50 });',
      'const orderId = "order-" + process.pid;',
      'const invoke = (traceId: string, sub = "user-1") => handler({ body: JSON.stringify({ orderId, amount: 500, traceId }), requestContext: { authorizer: { jwt: { claims: { sub }, scopes: [] } } } } as unknown as ApiEvent, { functionName: "pack-check", awsRequestId: traceId, getRemainingTimeInMillis: () => 30_000 } as Context);',
      'const first = await invoke("t-1");',
      'const retry = await invoke("t-2");',
      'const other = await invoke("t-3", "user-2");',
      'console.log("pack-check:", first.statusCode, retry.statusCode, first.body === retry.body, other.statusCode, payments.calls);',
      'client.destroy();',
    ].join('\n'),
    expectOutput: ['pack-check: 201 201 true 201 2'],
    node10: true,
  },
  {
    dir: 'consumers',
    driver: 'script',
    service: 'rabbitmq',
    // The same message published twice (a redelivery), then a sentinel: one bill for each.
    epilogue: [
      'const id = "pack-check-" + process.pid + "-" + Date.now();',
      // A channel of the epilogue's own to publish on (the example's channels are the consumer's).
      'const channel = await (await connection()).createChannel();',
      'const publish = (messageId: string) => channel.sendToQueue("invoices", Buffer.from(JSON.stringify({ id: messageId, amount: 500 })), { messageId });',
      'const billed = async (messageId: string) => { for (let i = 0; i < 400 && ledger.billsOf(messageId) === 0; i++) await new Promise((r) => setTimeout(r, 50)); };',
      'publish(id);',
      'await billed(id);',
      'publish(id);',
      'publish(id + "-sentinel");',
      'await billed(id + "-sentinel");',
      'await new Promise((r) => setTimeout(r, 300));',
      'await consumer.stop();',
      'await channel.close();',
      'await (await connecting)?.close();',
      'console.log("pack-check:", ledger.billsOf(id), ledger.billsOf(id + "-sentinel"));',
      "// The store's Redis client is not named in the example: nothing else can close it.",
      'process.exit(0);',
    ].join('\n'),
    expectOutput: ['pack-check: 1 1'],
    node10: true,
  },
  {
    dir: 'otel',
    driver: 'script',
    // A tracer provider of our own (no SDK among the peers): the listener made before it was
    // registered must still start spans through @opentelemetry/api's proxy.
    epilogue: [
      // Imported as the example's app does (ESM import, CJS require): a CJS import() would
      // load the api's ESM build, another instance than the one @idem/otel requires.
      "import { INVALID_SPAN_CONTEXT, type Span, trace } from '@opentelemetry/api';",
      'const spans: string[] = [];',
      'const span = { setAttribute() { return span; }, setAttributes() { return span; }, addEvent() { return span; }, setStatus() { return span; }, recordException() {}, end() {}, isRecording: () => true, spanContext: () => INVALID_SPAN_CONTEXT, updateName() { return span; }, addLink() { return span; }, addLinks() { return span; } };',
      'trace.setGlobalTracerProvider({ getTracer: () => ({ startSpan: (name: string) => { spans.push(name); return span as unknown as Span; }, startActiveSpan: (() => { throw new Error("unused"); }) as never }) });',
      'const again = await idem.execute({ key, scope: [tenant, "POST /charges"], operation: "POST /charges" }, async ({ fence }) => charge(fence));',
      'const other = await idem.execute({ key: key + "-2", scope: [tenant, "POST /charges"], operation: "POST /charges" }, async ({ fence }) => charge(fence));',
      'console.log("pack-check:", again.replayed, other.replayed, payments.calls, spans.length > 0);',
    ].join('\n'),
    expectOutput: ['pack-check: true false 2 true'],
    node10: true,
  },
];

/** Whether the example's CJS form is compiled and run in the peer set `set`. */
export function hasCjs(spec: ExampleSpec, set: string): boolean {
  return !spec.cjsIn || (spec.cjsIn as string[]).includes(set);
}

/** The first ```ts block of a package's README. */
export function readmeExample(packagesDir: string, dir: string): string {
  const readme = readFileSync(join(packagesDir, dir, 'README.md'), 'utf8');
  const match = /^```ts\n([\s\S]*?)^```$/m.exec(readme);
  if (!match?.[1]) throw new Error(`packages/${dir}/README.md has no \`\`\`ts example`);
  return match[1];
}

/** The example as an ES module (`.mts`): as written, then the epilogue. */
export function asModule(example: string, spec: ExampleSpec): string {
  return `${example}\n${spec.epilogue ?? ''}\nexport {};\n`;
}

/**
 * The example as CommonJS (`.cts`): imports stay on top (tsc turns them into `require`), the
 * rest runs in an async function, since CommonJS has no top-level await.
 */
export function asCommonJs(example: string, spec: ExampleSpec): string {
  // The epilogue's imports go on top too.
  const lines = `${example}\n${spec.epilogue ?? ''}`.split('\n');
  const imports: string[] = [];
  const body: string[] = [];
  let inImport = false;
  for (const line of lines) {
    if (inImport || /^import\s/.test(line)) {
      imports.push(line);
      inImport = !/from\s+['"][^'"]+['"];?\s*$/.test(line);
    } else {
      // In the function an export is a local (the lambda example exports its handler).
      body.push(line.replace(/^export (?=(const|let|function|async function|class) )/, ''));
    }
  }
  return [
    ...imports,
    'async function main(): Promise<void> {',
    ...body,
    '}',
    'main().catch((error: unknown) => {',
    '  console.error(error);',
    '  process.exit(1);',
    '});',
    '',
  ].join('\n');
}
