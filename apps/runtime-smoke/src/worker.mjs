// workerd: a module worker. The app is made at the first request: workerd allows no timers
// nor random values at global scope.
import { createApp } from './app.mjs';

let app;

export default {
  fetch(request, env, ctx) {
    app ??= createApp();
    return app.fetch(request, env, ctx);
  },
};
