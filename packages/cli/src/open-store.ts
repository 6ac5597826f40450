import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { type StoreAdmin, StoreUnavailableError } from '@idem/core';
import { createDynamoDbStore, recommendedDynamoDbClientConfig } from '@idem/store-dynamodb';
import { createPostgresStore, recommendedPoolConfig } from '@idem/store-postgres';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type CliCommand, maskedText, shown, UsageError } from './args.js';

/** A store's admin, and how to close the connection opened for it. */
export interface OpenedStore {
  admin: StoreAdmin;
  /** Which store it is, for messages. */
  describe: string;
  close(): Promise<void>;
}

function adminOf(store: { admin?: StoreAdmin }): StoreAdmin {
  if (!store.admin) throw new Error('This store has no admin surface');
  return store.admin;
}

async function openRedis(command: CliCommand): Promise<OpenedStore> {
  // ioredis would SELECT whatever the path says (`/abc` as NaN) and raise the refusal as an
  // unhandled error: a database that is not a number is the URL's fault, found before connecting.
  if (!/^\/?(?:\d{1,5}\/?)?$/.test(command.store.pathname))
    throw new UsageError(
      `${shown(command.store)}: the path names the database, a number (redis://host:6379/0)`,
      'bad_store_url',
    );
  const client = new Redis(command.store.href, {
    ...recommendedRedisOptions({ maxReconnectDelayMs: 200 }),
    lazyConnect: true,
    // A CLI gives up instead of reconnecting for ever: the command's time limit decides.
    retryStrategy: () => null,
  });
  let lastError: Error | undefined;
  client.on('error', (error: Error) => {
    lastError = error; // the connect failure below says why
  });
  const close = async () => client.disconnect();
  try {
    await client.connect();
  } catch (error) {
    await close();
    const why = lastError ?? (error as Error);
    throw new StoreUnavailableError(`cannot connect: ${why.message}`, { cause: why });
  }
  // ioredis answers connect() even when the SELECT of the URL's database failed (an index
  // out of range), and then runs every command on database 0: select it again, and fail.
  const db = client.options.db ?? 0;
  if (db !== 0) {
    try {
      await client.select(db);
    } catch (error) {
      await close();
      throw new Error(`cannot select database ${db}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  const store = createRedisStore({ client, keyPrefix: command.prefix ?? 'idem:' });
  return { admin: adminOf(store), describe: shown(command.store), close };
}

async function openPostgres(command: CliCommand): Promise<OpenedStore> {
  const pool = new pg.Pool({
    connectionString: command.store.href,
    ...recommendedPoolConfig(),
    max: 1,
  });
  pool.on('error', () => undefined);
  const store = createPostgresStore({
    pool,
    table: command.table ?? 'idem_records',
    keyPrefix: command.prefix ?? '',
  });
  return { admin: adminOf(store), describe: shown(command.store), close: () => pool.end() };
}

async function openDynamoDb(command: CliCommand): Promise<OpenedStore> {
  const tableName =
    command.table ??
    decodeURIComponent(command.store.hostname || command.store.pathname.replace(/^\/+/, ''));
  if (!tableName)
    throw new UsageError('dynamodb://<table>: name the table (or give --table)', 'bad_store_url');
  const region = command.store.searchParams.get('region') ?? process.env.AWS_REGION;
  const endpoint = command.store.searchParams.get('endpoint') ?? undefined;
  const client = new DynamoDBClient({
    ...recommendedDynamoDbClientConfig(),
    ...(region ? { region } : {}),
    ...(endpoint ? { endpoint } : {}),
  });
  const store = createDynamoDbStore({ client, tableName, keyPrefix: command.prefix ?? '' });
  return {
    admin: adminOf(store),
    describe: `dynamodb table ${tableName}${endpoint ? ` at ${shownEndpoint(endpoint)}` : ''}`,
    close: async () => client.destroy(),
  };
}

/** An endpoint for messages: its password (and credential parameters) masked. */
function shownEndpoint(endpoint: string): string {
  try {
    return shown(new URL(endpoint));
  } catch {
    return maskedText(endpoint);
  }
}

/** Connects to the store the URL names. */
export function openStore(command: CliCommand): Promise<OpenedStore> {
  switch (command.store.protocol) {
    case 'redis:':
    case 'rediss:':
      return openRedis(command);
    case 'postgres:':
    case 'postgresql:':
      return openPostgres(command);
    case 'dynamodb:':
      return openDynamoDb(command);
    default:
      throw new UsageError(
        `Unknown store ${command.store.protocol}// (redis://, rediss://, postgres://, dynamodb://)`,
        'bad_store_url',
      );
  }
}
