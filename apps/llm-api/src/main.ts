import { BackendError } from './backend.js';
import { ConfigError, describeConfig, parseConfig } from './config.js';
import { startServer } from './server.js';

/** Entry point: `node dist/main.js` / `tsx src/main.ts`. Exit codes: 0 clean stop, 1 start failure, 2 unfinished work at shutdown. */
async function main(): Promise<void> {
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`llm-api: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(config);
  } catch (error) {
    const message =
      error instanceof BackendError || error instanceof Error ? error.message : String(error);
    console.error(`llm-api: cannot start: ${message}`);
    process.exit(1);
  }
  console.log(`llm-api listening on ${server.url} (${describeConfig(config)})`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`llm-api: ${signal} received, finishing in-flight requests`);
    const finished = await server.close();
    console.log(
      finished ? 'llm-api: stopped cleanly' : 'llm-api: stopped with unfinished requests',
    );
    process.exit(finished ? 0 : 2);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

void main();
