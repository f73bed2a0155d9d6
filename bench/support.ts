// What every benchmark script shares: cleanup of the servers it started (also on Ctrl-C),
// logging, and number formatting.
import { run, type RunResult } from '../test/support/processes.ts';

const cleanups: Array<{ name: string; fn: () => Promise<void> }> = [];

export function onCleanup(name: string, fn: () => Promise<void>): void {
  cleanups.push({ name, fn });
}

let cleaning: Promise<void> | null = null;

/** Runs every registered cleanup once, newest first; one failing does not stop the others. */
export function cleanupAll(): Promise<void> {
  cleaning ??= (async (): Promise<void> => {
    while (cleanups.length > 0) {
      const c = cleanups.pop()!;
      try {
        await c.fn();
      } catch (err) {
        console.error(`cleanup of ${c.name} failed: ${errorMessage(err)}`);
      }
    }
  })();
  return cleaning;
}

/** Set on SIGINT/SIGTERM: benchmarks stop starting new runs, and cleanup runs before exit. */
export let interrupted: boolean = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: cleaning up`);
    void cleanupAll().finally(() => process.exit(130));
  });
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function log(line: string): void {
  process.stderr.write(`[bench] ${line}\n`);
}

export function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

export function fmt(n: number | null, digits: number): string {
  return n === null ? '-' : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** The first line a tool prints about itself (its version), for the report. */
export async function firstLine(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  try {
    const r: RunResult = await run(cmd, args, { timeoutMs: 10_000, ...(env ? { env } : {}) });
    return (r.stdout.trim() || r.stderr.trim()).split('\n')[0] ?? '';
  } catch (err) {
    return `unknown (${errorMessage(err)})`;
  }
}
