// Retention: removes recordings of sessions that ended longer ago than their connection keeps
// them — never a session on legal hold, never an unsealed one — after writing a signed
// tombstone into the seal log that names each removed session and its seal.
import type { Logger } from 'pino';
import type { Store } from '../store/types.ts';
import { nowUs } from '../util/ids.ts';
import { formatDuration } from '../util/duration.ts';
import type { Recorder } from './recorder.ts';

export interface RetentionRun { removed: number; byConnection: Record<string, number> }

export async function runRetention(store: Store, recorder: Recorder, log: Logger): Promise<RetentionRun> {
  const result: RetentionRun = { removed: 0, byConnection: {} };
  for (const conn of await store.listConnections()) {
    const keep = conn.options.retentionSeconds;
    if (!keep) continue;
    const expired = await store.listExpiredSessions(conn.id, nowUs() - keep * 1_000_000);
    const removable = [];
    for (const s of expired) {
      const seal = await store.getSeal(s.id);
      if (seal) removable.push({ sessionId: s.id, sealPosition: seal.position, sealHash: seal.hash });
    }
    if (removable.length === 0) continue;
    await recorder.tombstone(removable, `retention: connection ${conn.name} keeps recordings ${formatDuration(keep)}`);
    await store.deleteSessions(removable.map((r) => r.sessionId));
    result.removed += removable.length;
    result.byConnection[conn.name] = removable.length;
    log.info({ connection: conn.name, removed: removable.length }, 'retention removed expired recordings (tombstoned)');
  }
  return result;
}

/** Runs retention now and then every `intervalMs`. */
export function scheduleRetention(store: Store, recorder: Recorder, log: Logger, intervalMs: number): () => void {
  let running = false;
  const tick = (): void => {
    if (running) return;
    running = true;
    runRetention(store, recorder, log)
      .catch((err: unknown) => log.error({ err: (err as Error).message }, 'retention run failed'))
      .finally(() => { running = false; });
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  tick();
  return () => clearInterval(timer);
}
