import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Child, freePort, spawnChild } from './processes.js';
import { startRedis } from './redis-server.js';
import { startTcpFaultProxy, type TcpFaultProxy } from './tcp-fault-proxy.js';

/** Which store a row runs on. */
export type StoreKind = 'redis-aof' | 'redis-volatile' | 'dynamodb' | 'memory';

/** A store of the suite's own behind a TCP fault proxy, and the app env that points at it. */
export interface StoreHandle {
  kind: StoreKind;
  /** What the app instances get (REDIS_URL / DYNAMODB_* through the proxy). */
  env: Record<string, string>;
  proxy?: TcpFaultProxy;
  /** kill -9 of the store process, by PID. */
  kill9(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it answers. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

interface DynamoDbLocalScript {
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

async function startDynamoDb(): Promise<StoreHandle> {
  const script = (await import(dynamoScript)) as DynamoDbLocalScript;
  script.assertJava();
  const emulator = script.fetchDynamoDbLocal();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'idem-chaos-dynamodb-'));
  // On disk (-dbPath), so a kill -9 and a restart keep what was written.
  const args = [
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
  };
  await start();
  const proxy = await startTcpFaultProxy(port);
  return {
    kind: 'dynamodb',
    env: {
      DYNAMODB_TABLE: `chaos_${Date.now().toString(36)}`,
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
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Starts the store a row needs (nothing for `memory`). */
export async function startStore(kind: StoreKind): Promise<StoreHandle> {
  if (kind === 'memory') {
    const none = async () => undefined;
    return { kind, env: {}, kill9: none, restart: none, close: none };
  }
  if (kind === 'dynamodb') return startDynamoDb();
  const redis = await startRedis(kind === 'redis-aof');
  const proxy = await startTcpFaultProxy(redis.port);
  return {
    kind,
    env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}` },
    proxy,
    kill9: () => redis.kill9(),
    restart: () => redis.restart(),
    async close() {
      await proxy.close();
      await redis.close();
    },
  };
}
