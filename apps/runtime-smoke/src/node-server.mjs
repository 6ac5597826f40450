// Node: @hono/node-server on loopback, an ephemeral port, announced on stdout.
import { serve } from '@hono/node-server';
import { createApp } from './app.mjs';

serve({ fetch: createApp().fetch, hostname: '127.0.0.1', port: 0 }, (info) => {
  console.log(`listening ${info.port} ${process.version}`);
});
