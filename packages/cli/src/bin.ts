#!/usr/bin/env node
import { runCli } from './run-cli.js';

runCli(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  // A connection still opening after --timeout-ms must not hold the process: exit once the
  // output had time to drain (an unref'd timer fires only if something else keeps it alive).
  setTimeout(() => process.exit(code), 1_000).unref();
});
