// Deno: Deno.serve on loopback, an ephemeral port, announced on stdout.
import { createApp } from './app.mjs';

Deno.serve(
  {
    hostname: '127.0.0.1',
    port: 0,
    onListen: ({ port }) => console.log(`listening ${port} deno-${Deno.version.deno}`),
  },
  createApp().fetch,
);
