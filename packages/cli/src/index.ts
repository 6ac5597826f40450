export type { CliAction, CliCommand } from './args.js';
export { parseCommand, USAGE, UsageError } from './args.js';
export type { CliIo } from './run-cli.js';
export { EXIT, runCli } from './run-cli.js';
