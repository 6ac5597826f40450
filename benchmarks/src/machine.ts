import { cpus, loadavg, totalmem } from 'node:os';

/** Lines describing the machine and the run, printed above the tables. */
export function describeMachine(): string[] {
  const cores = cpus();
  return [
    `${new Date().toISOString()}, ${cores.length} cores (${cores[0]?.model.trim() ?? 'unknown CPU'}), ${(totalmem() / 1024 ** 3).toFixed(0)} GiB, Node ${process.version}, ${process.platform}/${process.arch}`,
    `load average at start: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  ];
}

export function loadNow(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}
