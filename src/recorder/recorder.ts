import type { Logger } from 'pino';
import { newSessionId, nowUs } from '../util/ids.ts';
import type { EventRow, RecordBatch, SessionEnd, SessionRow, Store } from '../store/types.ts';

export interface RecorderOptions {
  /** Result rows kept per statement (the sample, not the full result). */
  sampleRows: number;
  /** Bytes of result data kept per statement. */
  sampleBytes: number;
}

export const DEFAULT_RECORDER_OPTIONS: RecorderOptions = { sampleRows: 100, sampleBytes: 64 * 1024 };

/** Longest time an event nobody waits for stays in memory before it is committed. */
const LAZY_FLUSH_MS = 2;

export type SessionStartInfo = Omit<SessionRow, 'id' | 'startedAt' | 'endedAt' | 'endReason' | 'eventCount'>;

interface PendingCommit {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * The shared recording stage. Every engine appends events here; events are written in batches
 * (group commit): all events queued during one turn of the event loop go to the store in one
 * transaction, and every caller waiting on durability is released by that single commit.
 */
export class Recorder {
  readonly options: RecorderOptions;
  private readonly store: Store;
  private readonly log: Logger;
  private batch: RecordBatch = emptyBatch();
  private commit: PendingCommit | null = null;
  private scheduled = false;
  private lazyTimer: NodeJS.Timeout | null = null;
  private writer: Promise<void> | null = null;
  private readonly open = new Set<SessionRecording>();
  /** Commits and events written so far: events per commit is the group-commit factor. */
  readonly stats = { commits: 0, events: 0 };

  constructor(store: Store, log: Logger, options: Partial<RecorderOptions> = {}) {
    this.store = store;
    this.log = log;
    this.options = { ...DEFAULT_RECORDER_OPTIONS, ...options };
  }

  /** Creates the session and its start event; resolves once both are durable. */
  async startSession(info: SessionStartInfo, details: Record<string, unknown> = {}): Promise<SessionRecording> {
    const row: SessionRow = { ...info, id: newSessionId(), startedAt: nowUs(), endedAt: null, endReason: null, eventCount: 0 };
    const session = new SessionRecording(this, row.id);
    this.batch.sessionsStarted.push(row);
    const pending = session.record('session.start', {
      protocol: row.protocol, identity: { id: row.identityId, name: row.identityName, kind: row.identityKind },
      clientAddr: row.clientAddr, applicationName: row.applicationName,
      connection: { id: row.connectionId, name: row.connectionName },
      target: { host: row.targetHost, port: row.targetPort, database: row.targetDatabase, user: row.targetUser },
      ...details,
    });
    this.open.add(session);
    await pending;
    return session;
  }

  /**
   * Queues an event; the returned promise settles when the batch holding it is committed.
   * An urgent event (someone waits on it: record before forward) is committed at the end of
   * this event-loop turn; others ride along with the next commit, or within `lazyFlushMs`.
   */
  enqueue(event: EventRow, urgent: boolean): Promise<void> {
    this.batch.events.push(event);
    return this.pendingCommit(urgent).promise;
  }

  enqueueEnd(end: SessionEnd, session: SessionRecording): Promise<void> {
    this.batch.sessionsEnded.push(end);
    this.open.delete(session);
    return this.pendingCommit(true).promise;
  }

  private pendingCommit(urgent: boolean): PendingCommit {
    if (!this.commit) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
      // Fire-and-forget callers never observe the rejection; it is logged once in flush().
      promise.catch(() => {});
      this.commit = { promise, resolve, reject };
    }
    if (urgent) {
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flushNow);
      }
    } else if (!this.scheduled && !this.lazyTimer) {
      this.lazyTimer = setTimeout(this.flushNow, LAZY_FLUSH_MS);
    }
    return this.commit;
  }

  private readonly flushNow = (): void => { void this.flush(); };

  /** Writes everything queued so far. One writer loop at a time; events queued meanwhile form the next batch. */
  flush(): Promise<void> {
    this.scheduled = false;
    if (this.lazyTimer) {
      clearTimeout(this.lazyTimer);
      this.lazyTimer = null;
    }
    if (!this.writer) this.writer = this.writeLoop().finally(() => { this.writer = null; });
    return this.writer;
  }

  private async writeLoop(): Promise<void> {
    while (this.commit) {
      const commit = this.commit;
      const batch = this.batch;
      this.batch = emptyBatch();
      this.commit = null;
      try {
        await this.store.writeBatch(batch);
        this.stats.commits++;
        this.stats.events += batch.events.length;
        commit.resolve();
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        this.log.error({ err: message, events: batch.events.length }, 'recording store write failed');
        commit.reject(new RecordingUnavailableError(message));
      }
    }
  }

  /** Ends every open session (used on shutdown) and waits for the final commit. */
  async close(reason = 'gateway shutdown'): Promise<void> {
    for (const s of [...this.open]) s.end(reason);
    while (this.commit || this.writer) await this.flush();
    this.log.info({ commits: this.stats.commits, events: this.stats.events }, 'recorder closed');
  }
}

export class RecordingUnavailableError extends Error {
  constructor(cause: string) {
    super(`recording store unavailable: ${cause}`);
  }
}

/** One session's event stream. Sequence numbers are assigned here, in the order events happen. */
export class SessionRecording {
  readonly id: string;
  private readonly recorder: Recorder;
  private seq = 0;
  private ended = false;

  constructor(recorder: Recorder, id: string) {
    this.recorder = recorder;
    this.id = id;
  }

  get eventCount(): number { return this.seq; }
  get isEnded(): boolean { return this.ended; }

  /** Appends an event nobody waits for (an outcome, a notice); returns its sequence number. */
  append(type: string, data: unknown, ts: number = nowUs()): number {
    if (this.ended) throw new Error(`session ${this.id} already ended`);
    const seq = this.seq++;
    void this.recorder.enqueue({ sessionId: this.id, seq, ts, type, data: JSON.stringify(data) }, false);
    return seq;
  }

  /** Appends an event that must be committed before the caller goes on; `durable` says when. */
  appendDurable(type: string, data: unknown, ts: number = nowUs()): { seq: number; durable: Promise<void> } {
    if (this.ended) throw new Error(`session ${this.id} already ended`);
    const seq = this.seq++;
    const durable = this.recorder.enqueue({ sessionId: this.id, seq, ts, type, data: JSON.stringify(data) }, true);
    return { seq, durable };
  }

  /** Appends and waits until durable: the record-before-forward path. */
  record(type: string, data: unknown, ts?: number): Promise<void> {
    return this.appendDurable(type, data, ts).durable;
  }

  end(reason: string): Promise<void> {
    if (this.ended) return Promise.resolve();
    const ts = nowUs();
    this.append('session.end', { reason }, ts);
    this.ended = true;
    return this.recorder.enqueueEnd({ sessionId: this.id, endedAt: ts, endReason: reason, eventCount: this.seq }, this);
  }
}

function emptyBatch(): RecordBatch {
  return { sessionsStarted: [], events: [], sessionsEnded: [] };
}
