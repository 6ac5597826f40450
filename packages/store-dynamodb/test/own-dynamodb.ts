/**
 * A DynamoDB Local that a fault test owns: started on a port it keeps, with its data in a
 * temp dir (`-sharedDb -dbPath`, so a restart finds the table again), killed, stopped and
 * restarted by signal. Uses the emulator that scripts/dynamodb-local.mjs fetched.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll } from 'vitest';
import {
  assertJava,
  fetchDynamoDbLocal,
  freePort,
  JVM_FLAGS,
  waitForDynamoDb,
} from '../../../scripts/dynamodb-local.mjs';
import { createDynamoDbStore, type DynamoDbStore } from '../src/index.js';

export interface OwnDynamoDb {
  readonly endpoint: string;
  /** Sends a signal to the Java process (SIGKILL waits for it to exit). */
  signal(signal: 'SIGKILL' | 'SIGSTOP' | 'SIGCONT'): Promise<void>;
  /** Starts it again on the same port and data dir; resolves once it answers. */
  restart(): Promise<void>;
  /** Kills it and removes its data. */
  destroy(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export async function startOwnDynamoDb(): Promise<OwnDynamoDb> {
  assertJava();
  const emulator = fetchDynamoDbLocal();
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'idem-dynamodb-'));
  const endpoint = `http://127.0.0.1:${port}`;
  let child: ChildProcess;

  async function start(): Promise<void> {
    child = spawn(
      'java',
      [
        ...JVM_FLAGS,
        `-Djava.library.path=${join(emulator, 'DynamoDBLocal_lib')}`,
        '-jar',
        join(emulator, 'DynamoDBLocal.jar'),
        '-sharedDb',
        '-dbPath',
        dir,
        '-disableTelemetry',
        '-port',
        String(port),
      ],
      { cwd: emulator, stdio: 'ignore', env: { ...process.env, DDB_LOCAL_TELEMETRY: '0' } },
    );
    live.add(child);
    const started = child;
    started.once('exit', () => live.delete(started));
    await waitForDynamoDb(endpoint, 60_000, () =>
      started.exitCode !== null ? `DynamoDB Local exited with ${started.exitCode}` : undefined,
    );
  }

  async function signal(name: 'SIGKILL' | 'SIGSTOP' | 'SIGCONT'): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = name === 'SIGKILL' ? once(child, 'exit') : undefined;
    child.kill(name);
    await exited;
  }

  await start();
  return {
    endpoint,
    signal,
    restart: start,
    async destroy() {
      await signal('SIGCONT');
      await signal('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A DynamoDB Local this file owns, an SDK client with the SDK's defaults (no request
 * timeout, an agent of 50 keep-alive sockets) and a store on table `tableName`, ready, for
 * the file's tests; all stopped after them.
 */
export function ownDynamoDbStore(tableName: string): {
  readonly service: OwnDynamoDb;
  readonly client: DynamoDBClient;
  readonly store: DynamoDbStore;
} {
  let own: { service: OwnDynamoDb; client: DynamoDBClient; store: DynamoDbStore } | undefined;
  beforeAll(async () => {
    const service = await startOwnDynamoDb();
    const client = new DynamoDBClient({
      endpoint: service.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
    });
    own = { service, client, store: createDynamoDbStore({ client, tableName }) };
    await own.store.ensureTable({ pollMs: 50 });
  }, 120_000);
  afterAll(async () => {
    await own?.service.signal('SIGCONT').catch(() => {});
    own?.client.destroy();
    await own?.service.destroy();
  });
  const started = () => {
    if (!own) throw new Error('the own DynamoDB Local is not started yet');
    return own;
  };
  return {
    get service() {
      return started().service;
    },
    get client() {
      return started().client;
    },
    get store() {
      return started().store;
    },
  };
}
