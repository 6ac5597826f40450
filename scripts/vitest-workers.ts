/**
 * How many test files of a package run at once (vitest's `maxWorkers`). Vitest's default is
 * one less than the CPUs: one file at a time on a 2-CPU machine. The packages that use this
 * spend most of a file's time waiting (real leases, timeouts, outages, other processes, the
 * services): measured alone on a 2-CPU VM, nestjs 216 s of wall time for 59 CPU-seconds, core
 * 171 for 56, lambda 121 for 15, hono 59 for 9.5, http-conformance 30 for 3. Their files run
 * `n` at a time, so those waits overlap. `IDEM_TEST_WORKERS` overrides every package's `n`
 * (1: one file at a time, as before).
 */
export function fileWorkers(n: number): number {
  const override = Number(process.env.IDEM_TEST_WORKERS);
  if (Number.isInteger(override) && override >= 1) return override;
  return n;
}
