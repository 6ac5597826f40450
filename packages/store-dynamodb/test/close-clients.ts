import { afterAll } from 'vitest';
import { clients } from './fixture-clients.js';

// A setup file (vitest.config.ts), so that it runs for every test file: the files share their
// worker process, and a hook at the top of store-fixture.ts, a module evaluated once a process,
// destroyed only the first file's clients, leaving every later file's connections open.
afterAll(() => {
  for (const client of clients) client.destroy();
  clients.clear();
});
