import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgres } from './postgres-server.js';
import { type Child, freePort, makeTempDir, removeTempDir, spawnChild } from './processes.js';
import { type ProxyProcess, startProxyProcess } from './proxy-process.js';
import { startRedis } from './redis-server.js';

/** Which store a row runs on. */
export type StoreKind = 'redis-aof' | 'redis-volatile' | 'dynamodb' | 'postgres' | 'memory';

/** A store of the suite's own behind a TCP fault proxy, and the app env that points at it. */
export interface StoreHandle {
  kind: StoreKind;
  /** What the app instances get (REDIS_URL / DYNAMODB_* / DATABASE_URL through the proxy). */
  env: Record<string, string>;
  proxy?: ProxyProcess;
  /** kill -9 of the store process, by PID. */
  kill9(): Promise<void>;
  /**
   * Starts it again on the same port and data; resolves once it answers, with the time
   * (`Date.now()`) it first answered where that is earlier (PostgreSQL: a read, before its
   * writes are prompt).
   */
  restart(): Promise<number | undefined>;
  close(): Promise<void>;
}

interface DynamoDbLocalScript {
  JVM_FLAGS: readonly string[];
  assertJava(): void;
  fetchDynamoDbLocal(): string;
  waitForDynamoDb(
    endpoint: string,
    timeoutMs: number,
    failed: () => string | undefined,
  ): Promise<void>;
}

const dynamoScript = resolve(
  fileURLToPath(new URL('../../../scripts/dynamodb-local.mjs', import.meta.url)),
);

/** Why DynamoDB Local cannot run here (no Java), or undefined when it can. */
export async function dynamoDbUnavailable(): Promise<string | undefined> {
  try {
    const script = (await import(dynamoScript)) as DynamoDbLocalScript;
    script.assertJava();
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/** One DynamoDB API call with dummy credentials (DynamoDB Local does not check them). */
async function dynamoCall(endpoint: string, target: string, body: unknown): Promise<number> {
  const response = await fetch(endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.0',
      'x-amz-target': `DynamoDB_20120810.${target}`,
      authorization:
        'AWS4-HMAC-SHA256 Credential=chaoslocal/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0',
    },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(2_000),
  });
  await response.arrayBuffer();
  return response.status;
}

/**
 * Resolves once the emulator serves what the app does promptly: three rounds in a row of a
 * consistent GetItem and a conditional UpdateItem on `table`, each within 250 ms, not merely
 * ListTables. That is the moment the store is back for the app, from which recovery is
 * measured. A cold JVM right after a restart answers reads promptly well before its write
 * path is (its conditional writes took 0.3 to 1 s for a few seconds on the 2-core machine),
 * and that time is the emulator's, not the app's.
 */
async function waitForItems(endpoint: string, table: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const key = { pk: { S: 'chaos-readiness' } };
  let prompt = 0;
  while (prompt < 3) {
    const started = Date.now();
    const read = await dynamoCall(endpoint, 'GetItem', {
      TableName: table,
      Key: key,
      ConsistentRead: true,
    }).catch(() => 0);
    // 400 = the table does not exist yet (first start, before the app created it).
    const write =
      read === 200
        ? await dynamoCall(endpoint, 'UpdateItem', {
            TableName: table,
            Key: key,
            UpdateExpression: 'ADD n :one',
            ConditionExpression: 'attribute_not_exists(pk) OR n >= :zero',
            ExpressionAttributeValues: { ':one': { N: '1' }, ':zero': { N: '0' } },
          }).catch(() => 0)
        : read;
    const ok = (write === 200 || write === 400) && Date.now() - started <= 250;
    prompt = ok ? prompt + 1 : 0;
    if (Date.now() > deadline) throw new Error(`DynamoDB Local did not serve ${table} in time`);
    if (!ok) await new Promise((r) => setTimeout(r, 50));
  }
}

async function startDynamoDb(): Promise<StoreHandle> {
  const script = (await import(dynamoScript)) as DynamoDbLocalScript;
  script.assertJava();
  const emulator = script.fetchDynamoDbLocal();
  const port = await freePort();
  const dir = makeTempDir('idem-chaos-dynamodb-');
  const table = `chaos_${Date.now().toString(36)}`;
  // On disk (-dbPath), so a kill -9 and a restart keep what was written.
  const args = [
    ...script.JVM_FLAGS,
    `-Djava.library.path=${join(emulator, 'DynamoDBLocal_lib')}`,
    '-jar',
    join(emulator, 'DynamoDBLocal.jar'),
    '-sharedDb',
    '-dbPath',
    dir,
    '-disableTelemetry',
    '-port',
    String(port),
  ];
  let child: Child | undefined;
  const start = async () => {
    const current = spawnChild(`dynamodb-local:${port}`, 'java', args, {
      cwd: emulator,
      env: { ...process.env, DDB_LOCAL_TELEMETRY: '0' },
    });
    child = current;
    await script.waitForDynamoDb(`http://127.0.0.1:${port}`, 60_000, () =>
      current.done ? `DynamoDB Local exited:\n${current.output()}` : undefined,
    );
    await waitForItems(`http://127.0.0.1:${port}`, table, 30_000);
    return undefined;
  };
  await start();
  const proxy = await startProxyProcess(port);
  return {
    kind: 'dynamodb',
    env: {
      DYNAMODB_TABLE: table,
      DYNAMODB_ENDPOINT: `http://127.0.0.1:${proxy.port}`,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'chaoslocal',
      AWS_SECRET_ACCESS_KEY: 'chaoslocal',
    },
    proxy,
    async kill9() {
      child?.signal('SIGKILL');
      await child?.exited;
    },
    restart: start,
    async close() {
      await proxy.close();
      if (child && !child.done) await child.stop(3_000);
      removeTempDir(dir);
    },
  };
}

/** Starts the store a row needs (nothing for `memory`). */
export async function startStore(kind: StoreKind): Promise<StoreHandle> {
  if (kind === 'memory') {
    const none = async () => undefined;
    return { kind, env: {}, kill9: none, restart: async () => undefined, close: none };
  }
  if (kind === 'dynamodb') return startDynamoDb();
  const server =
    kind === 'postgres' ? await startPostgres() : await startRedis(kind === 'redis-aof');
  const proxy = await startProxyProcess(server.port).catch(async (error: unknown) => {
    await server.close();
    throw error;
  });
  return {
    kind,
    env:
      kind === 'postgres'
        ? { DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/postgres` }
        : { REDIS_URL: `redis://127.0.0.1:${proxy.port}` },
    proxy,
    kill9: () => server.kill9(),
    restart: () => server.restart(),
    async close() {
      await proxy.close();
      await server.close();
    },
  };
}
