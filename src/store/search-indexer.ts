// Keeps the full-text index (search-text.ts) filled behind the recording: every few seconds, the
// sessions that ended since are indexed, a batch at a time, on the store's own connection — never
// on a relay's path. Several gateways on one store may all run it (indexing is idempotent).
import type { Logger } from 'pino';
import type { Store } from './types.ts';

const BATCH = 100;

export function scheduleSearchIndexing(store: Store, log: Logger, intervalMs = 2000): () => void {
  let running = false;
  let stopped = false;
  const tick = (): void => {
    if (running || stopped) return;
    running = true;
    (async () => {
      while (!stopped && (await store.indexSessionsForSearch(BATCH)) === BATCH) await new Promise((r) => setImmediate(r));
    })().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'search indexing failed; retried later'))
      .finally(() => { running = false; });
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  tick();
  return () => { stopped = true; clearInterval(timer); };
}
