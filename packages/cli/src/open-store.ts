import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { type StoreAdmin, StoreUnavailableError } from '@idem/core';
import { createDynamoDbStore, recommendedDynamoDbClientConfig } from '@idem/store-dynamodb';
import { createPostgresStore, recommendedPoolConfig } from '@idem/store-postgres';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type CliCommand, echoed, maskedText, shown, UsageError } from './args.js';

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
  const { href, fromQuery } = redisUrlParts(command.store);
  const client = new Redis(href, {
    ...recommendedRedisOptions({ maxReconnectDelayMs: 200 }),
    lazyConnect: true,
    // A CLI gives up instead of reconnecting for ever: the command's time limit decides.
    retryStrategy: () => null,
    ...fromQuery,
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

// The query parameters a `redis://` URL may carry here. ioredis takes every parameter as a
// client option, over the ones given in code: `?retryStrategy=x` or `?lazyConnect=` replaced
// the CLI's own, and `?db=abc` or `?connectTimeout=abc` ended the process with an unhandled
// error (exit 1, a stack trace, no JSON) instead of a usage error.
const REDIS_PARAMS: Record<string, RegExp> = {
  db: /^\d{1,5}$/,
  family: /^[046]$/,
  username: /^/,
  password: /^/,
};

/** The URL without its query, for ioredis, and the parameters it may carry, checked. */
function redisUrlParts(store: URL): { href: string; fromQuery: Record<string, string | number> } {
  const fromQuery: Record<string, string | number> = {};
  for (const [name, value] of store.searchParams) {
    const valid = Object.hasOwn(REDIS_PARAMS, name) ? REDIS_PARAMS[name] : undefined;
    if (!valid)
      throw new UsageError(
        `${shown(store)}: ${echoed(name)} is not a query parameter a redis:// URL takes here (db, family, username, password)`,
        'bad_store_url',
      );
    if (!valid.test(value) || name in fromQuery)
      throw new UsageError(`${shown(store)}: a bad or repeated ${name} parameter`, 'bad_store_url');
    if (name === 'db' && store.pathname.replace(/\//g, '') !== '')
      throw new UsageError(`${shown(store)}: the database is named twice`, 'bad_store_url');
    fromQuery[name] = name === 'db' || name === 'family' ? Number(value) : value;
  }
  const copy = new URL(store.href);
  copy.search = '';
  return { href: copy.href, fromQuery };
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

/** The table a `dynamodb://<table>` URL names (percent-escapes decoded), or '' for none. */
function urlTable(store: URL): string {
  const raw = store.hostname || store.pathname.replace(/^\/+/, '');
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new UsageError(
      `${shown(store)}: the table name has a malformed %-escape`,
      'bad_store_url',
    );
  }
}

/** The `endpoint=` parameter, checked: an http(s) URL the SDK can send to. */
function urlEndpoint(store: URL): string | undefined {
  const endpoint = store.searchParams.get('endpoint') ?? undefined;
  if (endpoint === undefined) return undefined;
  let parsed: URL | undefined;
  try {
    parsed = new URL(endpoint);
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:'))
    throw new UsageError(
      `${shown(store)}: endpoint must be an http:// or https:// URL (endpoint=http://127.0.0.1:8000)`,
      'bad_store_url',
    );
  return endpoint;
}

async function openDynamoDb(command: CliCommand): Promise<OpenedStore> {
  const tableName = command.table ?? urlTable(command.store);
  if (!tableName)
    throw new UsageError('dynamodb://<table>: name the table (or give --table)', 'bad_store_url');
  const given = command.store.searchParams.get('region') ?? undefined;
  // A region is a hostname component (the SDK builds the endpoint from it).
  if (given !== undefined && !/^[A-Za-z0-9-]{1,64}$/.test(given))
    throw new UsageError(`${shown(command.store)}: region is not a region name`, 'bad_store_url');
  const region = given ?? process.env.AWS_REGION;
  const endpoint = urlEndpoint(command.store);
  const client = new DynamoDBClient({
    ...recommendedDynamoDbClientConfig(),
    ...(region ? { region } : {}),
    ...(endpoint ? { endpoint } : {}),
  });
  // No region in the URL nor anywhere the SDK looks (AWS_REGION, the shared config file): a
  // command line that can never work, found before anything is sent.
  try {
    await client.config.region();
  } catch (error) {
    client.destroy();
    throw new UsageError(
      `${shown(command.store)}: no region (add ?region=eu-west-1, or set AWS_REGION): ${(error as Error).message}`,
      'bad_store_url',
    );
  }
  let store: ReturnType<typeof createDynamoDbStore>;
  try {
    store = createDynamoDbStore({ client, tableName, keyPrefix: command.prefix ?? '' });
  } catch (error) {
    client.destroy();
    throw error;
  }
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
    return echoed(maskedText(endpoint));
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
        `Unknown store ${echoed(command.store.protocol)}// (redis://, rediss://, postgres://, dynamodb://)`,
        'bad_store_url',
      );
  }
}
