#!/usr/bin/env node
// DynamoDB Local for the tests and the benchmark of @idem/store-dynamodb, without Docker and
// without a dependency: the emulator jar ships inside the npm package
// amplify-dynamodb-simulator, whose own dependencies we do not want, so we `npm pack` the
// tarball alone, check it against a pinned integrity, and keep `emulator/` in a cache outside
// git.
//
//   node scripts/dynamodb-local.mjs fetch   download and extract once (idempotent)
//   node scripts/dynamodb-local.mjs start   run it in the foreground, print the endpoint
//
// Environment:
//   IDEM_DYNAMODB_LOCAL_DIR  cache folder (default ~/.cache/idem/dynamodb-local)
//   DYNAMODB_ENDPOINT        use this running DynamoDB (e.g. amazon/dynamodb-local in Docker)
//                            instead of starting one
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The pinned package and npm's `dist.integrity` of its tarball (base64 of SHA-512). */
export const SIMULATOR_SPEC = 'amplify-dynamodb-simulator@2.9.30';
export const SIMULATOR_INTEGRITY =
  'sha512-xTeeRLvzEfqyd5lh3bH4c0kHvSHHmmhD5ZDsHFKAQ5g2Zl6JqlFdutaQhCLHzxEp6Ry1o7TB6niIoXuQAnSewQ==';

const JAVA_HELP =
  'DynamoDB Local needs Java 11 or newer on PATH. Install it (Debian/Ubuntu: ' +
  'apt-get install -y openjdk-17-jre-headless; macOS: brew install openjdk@17), or point ' +
  'DYNAMODB_ENDPOINT at a running DynamoDB Local (docker run -p 8000:8000 amazon/dynamodb-local ' +
  'and DYNAMODB_ENDPOINT=http://127.0.0.1:8000).';

/** The cache folder that holds `emulator/`. */
export function cacheDir() {
  return resolve(
    process.env.IDEM_DYNAMODB_LOCAL_DIR || join(homedir(), '.cache', 'idem', 'dynamodb-local'),
  );
}

/** The folder holding DynamoDBLocal.jar, once fetched. */
export function emulatorDir() {
  return join(cacheDir(), 'emulator');
}

function marker() {
  return join(cacheDir(), 'integrity');
}

function isFetched() {
  return (
    existsSync(join(emulatorDir(), 'DynamoDBLocal.jar')) &&
    existsSync(marker()) &&
    readFileSync(marker(), 'utf8').trim() === SIMULATOR_INTEGRITY
  );
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', ...options });
  if (result.error) throw new Error(`${command} could not be run: ${result.error.message}`);
  if (result.status !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed (${result.status}): ${result.stderr || result.stdout}`,
    );
  }
  return result.stdout;
}

/**
 * Downloads the pinned simulator tarball with `npm pack`, verifies its integrity and
 * extracts `emulator/` into the cache folder. Does nothing when it is already there.
 * @returns {string} the emulator folder
 */
export function fetchDynamoDbLocal() {
  if (isFetched()) return emulatorDir();
  const root = cacheDir();
  mkdirSync(root, { recursive: true });
  const work = join(root, `.fetch-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(work, { recursive: true });
  try {
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const out = run(npm, ['pack', SIMULATOR_SPEC, '--json', '--pack-destination', work], {
      cwd: work,
      shell: process.platform === 'win32',
    });
    const packed = JSON.parse(out.slice(out.indexOf('[')));
    const tarball = join(work, packed[0].filename);
    const actual = `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`;
    if (actual !== SIMULATOR_INTEGRITY) {
      throw new Error(
        `${SIMULATOR_SPEC}: integrity mismatch (expected ${SIMULATOR_INTEGRITY}, got ${actual})`,
      );
    }
    run('tar', ['-xzf', tarball, '-C', work, 'package/emulator']);
    if (!existsSync(join(work, 'package', 'emulator', 'DynamoDBLocal.jar'))) {
      throw new Error(`${SIMULATOR_SPEC}: the tarball has no emulator/DynamoDBLocal.jar`);
    }
    rmSync(emulatorDir(), { recursive: true, force: true });
    renameSync(join(work, 'package', 'emulator'), emulatorDir());
    writeFileSync(marker(), `${SIMULATOR_INTEGRITY}\n`);
    return emulatorDir();
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * JVM flags of every DynamoDB Local the tests and the chaos suite start: the client
 * compiler only (C1). An emulator that lives for seconds to minutes never earns back the
 * optimising compiler's work, and on the 2-core machine that work competes with the tests.
 * Measured: the store-dynamodb suite took 22.5 CPU-s instead of 32.1, and after a kill -9
 * and restart under load the emulator served the app within 0.9 to 1.4 s instead of 1.2 to
 * 2.2 s (chaos row dynamodb-kill, 5 runs each, 3 busy loops beside it).
 */
export const JVM_FLAGS = ['-XX:TieredStopAtLevel=1'];

/** Throws with install instructions when no usable `java` is on PATH. */
export function assertJava() {
  const result = spawnSync('java', ['-version'], { encoding: 'utf8' });
  if (result.error || result.status !== 0) {
    const why = result.error ? result.error.message : (result.stderr || '').trim();
    throw new Error(`java is not available (${why}). ${JAVA_HELP}`);
  }
}

/** @returns {Promise<number>} a TCP port that was free a moment ago on 127.0.0.1 */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Something else than DynamoDB answered at the endpoint: another server holds its port (one
 * that took the port {@link freePort} found free before the emulator bound it).
 */
export class ForeignServerError extends Error {
  name = 'ForeignServerError';
}

/**
 * Whether `response` (to a ListTables call) is DynamoDB's: its list of tables, or one of its
 * own errors (a real endpoint refusing the placeholder signature names an AWS error type).
 * @param {Response} response
 */
async function answersAsDynamoDb(response) {
  let body;
  try {
    body = JSON.parse(await response.text());
  } catch {
    return false;
  }
  if (typeof body !== 'object' || body === null) return false;
  if (response.ok) return Array.isArray(body.TableNames);
  return typeof body.__type === 'string' && body.__type.includes('com.amazon');
}

/**
 * Resolves once DynamoDB answers its API at `endpoint` (a ListTables call answered with a
 * list of tables, or with one of DynamoDB's own errors); rejects after `timeoutMs`, and at
 * once with {@link ForeignServerError} when another server answers there.
 * @param {string} endpoint
 * @param {number} [timeoutMs]
 * @param {() => string | undefined} [failed] tells why waiting is pointless (the process died)
 */
export async function waitForDynamoDb(endpoint, timeoutMs = 30_000, failed = () => undefined) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    const why = failed();
    if (why) throw new Error(why);
    let response;
    try {
      response = await fetch(endpoint, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-amz-json-1.0',
          'x-amz-target': 'DynamoDB_20120810.ListTables',
          authorization:
            'AWS4-HMAC-SHA256 Credential=local/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0',
        },
        body: '{}',
        signal: AbortSignal.timeout(2_000),
      });
    } catch (error) {
      last = error instanceof Error ? error.message : String(error);
      await sleep(100);
      continue;
    }
    if (await answersAsDynamoDb(response)) return;
    throw new ForeignServerError(
      `${endpoint} answered ListTables with HTTP ${response.status}, not as DynamoDB: another server holds its port`,
    );
  }
  throw new Error(`DynamoDB did not answer at ${endpoint} within ${timeoutMs} ms (${last})`);
}

/** Attempts of {@link startDynamoDbLocal}, each on a new port, when another server takes one. */
const PORT_ATTEMPTS = 3;

/**
 * Starts DynamoDB Local (`-inMemory`, a free port on 127.0.0.1) and waits until it answers,
 * or uses `DYNAMODB_ENDPOINT` when that is set (then nothing is started). The port is free
 * when picked, but the JVM takes a second or two to bind it: when another process took it
 * meanwhile (the emulator cannot bind, or another server answers there), it starts again on
 * another port, at most three times.
 * @param {{ jvmFlags?: readonly string[], pickPort?: () => Promise<number> }} [options] JVM
 *   flags (default {@link JVM_FLAGS}; the benchmark passes none: its figures are the
 *   emulator's steady state); `pickPort` (default {@link freePort}) for tests of the retry
 * @returns {Promise<{ endpoint: string, started: boolean, stop: () => Promise<void> }>}
 */
export async function startDynamoDbLocal({ jvmFlags = JVM_FLAGS, pickPort = freePort } = {}) {
  const external = process.env.DYNAMODB_ENDPOINT;
  if (external) {
    await waitForDynamoDb(external, 10_000);
    return { endpoint: external, started: false, stop: async () => {} };
  }
  assertJava();
  const dir = fetchDynamoDbLocal();
  for (let attempt = 1; ; attempt++) {
    const port = await pickPort();
    const endpoint = `http://127.0.0.1:${port}`;
    const emulator = launch(dir, port, jvmFlags);
    try {
      await waitForDynamoDb(endpoint, 60_000, emulator.failed);
      return { endpoint, started: true, stop: emulator.stop };
    } catch (error) {
      await emulator.stop();
      const portTaken =
        error instanceof ForeignServerError ||
        /BindException|Address already in use|Failed to bind/i.test(String(error?.message));
      if (!portTaken || attempt >= PORT_ATTEMPTS) throw error;
    }
  }
}

/**
 * Runs DynamoDB Local on `port`: `failed()` tells why it stopped before answering (its last
 * output), `stop()` ends it (SIGTERM, then SIGKILL after 5 s).
 * @param {string} dir
 * @param {number} port
 * @param {readonly string[]} jvmFlags
 */
function launch(dir, port, jvmFlags) {
  const args = [
    ...jvmFlags,
    `-Djava.library.path=${join(dir, 'DynamoDBLocal_lib')}`,
    '-jar',
    join(dir, 'DynamoDBLocal.jar'),
    '-inMemory',
    // It would otherwise try to report usage to AWS: tests stay on the loopback interface.
    '-disableTelemetry',
    '-port',
    String(port),
  ];
  const child = spawn('java', args, {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, DDB_LOCAL_TELEMETRY: '0' },
  });
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-4_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited;
  const exit = new Promise((r) => {
    child.on('exit', (code, signal) => {
      exited = `DynamoDB Local exited (${signal ?? code}) before it answered:\n${output}`;
      r();
    });
    child.on('error', (error) => {
      exited = `DynamoDB Local could not start: ${error.message}. ${JAVA_HELP}`;
      r();
    });
  });
  const stop = async () => {
    if (exited === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exit;
      clearTimeout(timer);
    }
  };
  return { failed: () => exited, stop };
}

const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const command = process.argv[2];
  if (command === 'fetch') {
    const dir = fetchDynamoDbLocal();
    console.log(`dynamodb-local: ${SIMULATOR_SPEC} emulator ready in ${dir}`);
  } else if (command === 'start') {
    const local = await startDynamoDbLocal();
    console.log(`dynamodb-local: answering at ${local.endpoint} (Ctrl-C stops it)`);
    const stop = () => void local.stop().then(() => process.exit(0));
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  } else {
    console.error('usage: node scripts/dynamodb-local.mjs fetch|start');
    process.exit(2);
  }
}
