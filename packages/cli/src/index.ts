export type { CliAction, CliCommand, UsageErrorCode } from './args.js';
export { parseCommand, USAGE, UsageError } from './args.js';
export type { CliErrorCode, CliIo } from './run-cli.js';
export { EXIT, runCli } from './run-cli.js';
