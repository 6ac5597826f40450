import { request } from 'node:http';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';

/**
 * A check that a published (live) stream is not paced by its first client: the first client's
 * connection goes through a proxy that stops reading from the server after the first event (a
 * client that stops reading, or whose TCP connection died silently: the server cannot tell
 * them apart), while a duplicate attached to the stream must get every event as the route
 * makes it. The route makes each event only once the attached reader has the one before, and
 * goes on until the first client's socket on the server refuses more (its kernel buffers are
 * full: the first client is provably stalled), then a few more while it still does.
 *
 * Use: the route (of a live media type, `text/event-stream`) writes the events of
 * `pace.events(socket)` (`socket`: the server side of the request's connection) to its
 * response the way an app does (awaiting `'drain'` when a write answers false, or piping a
 * `Readable`), then ends it; the test calls `pace.run(baseUrl, path, mode, storedOutcomes)`.
 */
export interface LivePace {
  /** The route's events, each made once the attached reader has the one before. */
  events(socket: Socket | null | undefined): AsyncGenerator<string>;
  /**
   * Runs the exchange (one key per run). `storedOutcomes` counts the outcomes stored so
   * far (a spied store's `completed.length`): the attached body must end only after it
   * became 1. `paused`: the first client reads again afterwards and must get the same
   * bytes; `dead`: it never does (its connection is then closed by the test).
   */
  run(
    baseUrl: string,
    path: string,
    mode: 'paused' | 'dead',
    storedOutcomes: () => number,
  ): Promise<LivePaceResult>;
}

/** What {@link LivePace.run} saw. */
export interface LivePaceResult {
  /** The bytes the route wrote, in order. */
  produced: string;
  /** The attached reader's body. */
  attached: string;
  /** Outcomes stored when the attached body ended. */
  storedAtAttachedEnd: number;
  /** The first client's body (`paused`), after it read again. */
  first?: string;
  /** Whether the first client's socket on the server refused more while the last events were made. */
  firstClientStalled: boolean;
  /** Events the route made. */
  events: number;
}

/** Bytes of each event. */
const EVENT_BYTES = 16 * 1024;
/** Most events a run makes (about 32 MiB): loopback buffers take a few MiB. */
const MAX_EVENTS = 2048;
/** Events made once the first client is stalled. */
const AFTER_STALL = 4;
/** Longest wait for one step (an event reaching the reader, the body ending). */
const STEP_MS = 10_000;

function event(n: number): string {
  const head = `id: ${n}\ndata: `;
  return `${head}${'x'.repeat(EVENT_BYTES - head.length - 2)}\n\n`;
}

/** `promise`, or an error naming `what` after {@link STEP_MS}. */
async function within<T>(promise: Promise<T>, what: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what()} within ${STEP_MS} ms`)), STEP_MS);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A TCP proxy that can stop reading from the server (`freeze`) and read again (`thaw`). */
async function stallingProxy(target: number) {
  const pairs: Socket[] = [];
  let upstream: Socket | undefined;
  const server = createServer((client) => {
    const server = connect(target, '127.0.0.1');
    upstream = server;
    pairs.push(client, server);
    client.pipe(server);
    server.pipe(client);
    const end = () => {
      client.destroy();
      server.destroy();
    };
    client.on('error', end);
    server.on('error', end);
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    freeze: () => {
      upstream?.unpipe();
      upstream?.pause();
    },
    thaw: () => {
      if (upstream) upstream.pipe(pairs[0] as Socket);
      upstream?.resume();
    },
    close: async () => {
      for (const socket of pairs) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A {@link LivePace} check; one a test file, runs one after the other. */
export function livePace(): LivePace {
  let produced = '';
  let made = 0;
  let stalled = false;
  let attachedBytes = 0;
  let progress: (() => void) | undefined;
  const moved = () => {
    const wake = progress;
    progress = undefined;
    wake?.();
  };
  const readerHas = async (bytes: number) => {
    while (attachedBytes < bytes)
      await within(
        new Promise<void>((resolve) => {
          progress = resolve;
        }),
        () =>
          `the attached reader did not get event ${made - 1} (${attachedBytes} of ${bytes} bytes)`,
      );
  };
  let run = 0;

  return {
    async *events(socket) {
      // A route of an earlier run that is still going makes nothing for this one.
      const mine = run;
      let after = 0;
      while (mine === run && made < MAX_EVENTS && after < AFTER_STALL) {
        const next = event(made);
        produced += next;
        made++;
        yield next;
        await readerHas(produced.length);
        // Its socket refuses more (the kernel's buffers are full): the first client is stalled.
        // From then on it must stay so while the last events are made.
        const full = socket?.writableNeedDrain === true;
        if (stalled && !full) after = 0;
        stalled = full;
        if (stalled) after++;
      }
    },

    async run(baseUrl, path, mode, storedOutcomes) {
      produced = '';
      made = 0;
      stalled = false;
      attachedBytes = 0;
      run++;
      const key = `live-pace-${process.pid}-${Date.now()}-${run}`;
      const url = new URL(path, baseUrl);
      const proxy = await stallingProxy(Number(url.port));
      try {
        // The first client, through the proxy: the proxy stops reading after its first event.
        let firstText = '';
        let firstEnded: () => void = () => {};
        const firstDone = new Promise<void>((resolve) => (firstEnded = resolve));
        const firstHasEvent = new Promise<void>((resolve, reject) => {
          const req = request(
            {
              host: '127.0.0.1',
              port: proxy.port,
              path: url.pathname,
              method: 'POST',
              agent: false,
              headers: { 'idempotency-key': key, 'content-type': 'application/json' },
            },
            (res) => {
              res.setEncoding('utf8');
              res.on('data', (text: string) => {
                firstText += text;
                if (firstText.length >= EVENT_BYTES) resolve();
              });
              res.on('end', firstEnded);
              res.on('error', () => {});
            },
          );
          req.on('error', reject);
          req.end('{}');
        });
        await within(firstHasEvent, () => 'the first client got no event');
        proxy.freeze();

        // The duplicate attaches and reads everything as it comes.
        const attached = await fetch(url, {
          method: 'POST',
          headers: { 'idempotency-key': key, 'content-type': 'application/json' },
          body: '{}',
        });
        const reader = (attached.body as ReadableStream<Uint8Array>).getReader();
        const decoder = new TextDecoder();
        let attachedText = '';
        const readAll = async () => {
          for (let read = await reader.read(); !read.done; read = await reader.read()) {
            attachedText += decoder.decode(read.value, { stream: true });
            attachedBytes = attachedText.length;
            moved();
          }
          return storedOutcomes();
        };
        const storedAtAttachedEnd = await within(readAll(), () => {
          return `the attached reader (${attachedText.length} of ${produced.length} bytes made, ${made} events) did not end`;
        });
        const result: LivePaceResult = {
          produced,
          attached: attachedText,
          storedAtAttachedEnd,
          firstClientStalled: stalled,
          events: made,
        };
        if (mode === 'paused') {
          proxy.thaw();
          await within(
            firstDone,
            () =>
              `the first client (${firstText.length} of ${produced.length} bytes) did not get its end`,
          );
          result.first = firstText;
        }
        return result;
      } finally {
        await proxy.close();
      }
    },
  };
}
