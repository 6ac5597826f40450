// Bun: Bun.serve on loopback, an ephemeral port, announced on stdout.
import { createApp } from './app.mjs';

const server = Bun.serve({ fetch: createApp().fetch, hostname: '127.0.0.1', port: 0 });
console.log(`listening ${server.port} bun-${Bun.version}`);
