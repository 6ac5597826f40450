/**
 * The README examples, taken from the READMEs at test time so that they cannot drift: the
 * first ```ts block of each package's README is the example. What this file adds is only
 * what a README leaves to the reader (an epilogue that calls a function the example
 * defines, the service it talks to) and how the test drives and checks it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export type ExampleDriver = 'script' | 'express' | 'fastify' | 'hono' | 'vitest';

export interface ExampleSpec {
  /** Folder under packages/. */
  dir: string;
  driver: ExampleDriver;
  /** TypeScript appended after the example (inside the CJS wrapper too). */
  epilogue?: string;
  /** Lines the run MUST print (each a substring of stdout). */
  expectOutput?: string[];
  /** Type-checked under `moduleResolution: node10` as CJS too. */
  node10: boolean;
  /** Needs a service: the test provides it through the environment. */
  service?: 'redis' | 'postgres' | 'dynamodb' | 'idempotent-api';
}

export const EXAMPLES: ExampleSpec[] = [
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
];

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
  const lines = example.split('\n');
  const imports: string[] = [];
  const body: string[] = [];
  let inImport = false;
  for (const line of lines) {
    if (inImport || /^import\s/.test(line)) {
      imports.push(line);
      inImport = !/from\s+['"][^'"]+['"];?\s*$/.test(line);
    } else {
      body.push(line);
    }
  }
  return [
    ...imports,
    'async function main(): Promise<void> {',
    ...body,
    spec.epilogue ?? '',
    '}',
    'main().catch((error: unknown) => {',
    '  console.error(error);',
    '  process.exit(1);',
    '});',
    '',
  ].join('\n');
}
