/**
 * Counts the process's unhandled rejections while a test runs, with only this listener on
 * (so that Node's default, which ends the process, or vitest's own report does not see them).
 *
 *   const rejections = unhandledRejections();
 *   beforeEach(rejections.start);
 *   afterEach(rejections.stop);
 *   ... expect(rejections.seen).toEqual([]);
 */
export interface UnhandledRejections {
  /** The reasons seen since the last `start()`. */
  readonly seen: unknown[];
  /** Empties `seen` and puts this listener in the place of every other one. */
  start(): void;
  /** Takes this listener off and puts the others back. */
  stop(): void;
}

export function unhandledRejections(): UnhandledRejections {
  const seen: unknown[] = [];
  const onUnhandled = (reason: unknown) => {
    seen.push(reason);
  };
  let others: NodeJS.UnhandledRejectionListener[] = [];
  return {
    seen,
    start() {
      seen.length = 0;
      others = process.listeners('unhandledRejection');
      process.removeAllListeners('unhandledRejection');
      process.on('unhandledRejection', onUnhandled);
    },
    stop() {
      process.off('unhandledRejection', onUnhandled);
      for (const listener of others) process.on('unhandledRejection', listener);
      others = [];
    },
  };
}
