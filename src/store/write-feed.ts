// Tells live views that a session's recording grew: the store the recorder writes through is
// wrapped so that, once a batch is written, the sessions it touched are announced. Listeners then
// read the new events from the store (what they show is what was durably recorded, never the
// relay's own copy). Sessions recorded by another gateway sharing the store are not announced
// here; live views also look again every few seconds for them.
import { EventEmitter } from 'node:events';
import type { RecordBatch, Store } from './types.ts';

export class WriteFeed {
  private readonly emitter = new EventEmitter();

  constructor() {
    // One listener per live view; many reviewers may watch at once.
    this.emitter.setMaxListeners(0);
  }

  /** Calls `fn` after each written batch that touched `sessionId`; returns the unsubscribe. */
  watch(sessionId: string, fn: () => void): () => void {
    this.emitter.on(sessionId, fn);
    return () => this.emitter.off(sessionId, fn);
  }

  written(batch: RecordBatch): void {
    const ids = new Set<string>();
    for (const s of batch.sessionsStarted) ids.add(s.id);
    for (const e of batch.events) ids.add(e.sessionId);
    for (const e of batch.sessionsEnded) ids.add(e.sessionId);
    for (const id of ids) this.emitter.emit(id);
  }
}

/** `store` with writeBatch announced on `feed` after it resolves; everything else is the store's own. */
export function withWriteFeed(store: Store, feed: WriteFeed): Store {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'writeBatch') {
        return async (batch: RecordBatch) => {
          await target.writeBatch(batch);
          feed.written(batch);
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
