#!/usr/bin/env node
import { runCli } from './run-cli.js';

// The AWS SDK warns on stderr, once per process and in several lines, that its releases after
// January 2027 need Node 22: noise for an operator's command, and it breaks `--json`'s promise
// of nothing on stderr. Read when the DynamoDB client is made, so set before any command runs;
// a value the user set is kept.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// With --json the one JSON line on stdout is the whole output: a library's process warning
// (pg's about `?sslmode=require`) would be written on stderr by Node's default listener.
if (process.argv.includes('--json')) process.removeAllListeners('warning');

runCli(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  // A connection still opening after --timeout-ms must not hold the process: exit once the
  // output had time to drain (an unref'd timer fires only if something else keeps it alive).
  setTimeout(() => process.exit(code), 1_000).unref();
});
