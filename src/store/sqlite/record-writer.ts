import { Worker } from 'node:worker_threads';
import { SessionsTakenOverError, type RecordBatch, type SessionOwner } from '../types.ts';

interface Waiter { resolve: () => void; reject: (err: Error) => void }

/** Restarts of a dead writer thread allowed per RESTART_WINDOW_MS; past that, writes fail (closed) until the gateway restarts. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;

/**
 * Main-thread side of the recording writer thread. A thread that dies (a crash in SQLite, out of
 * memory) fails the writes it held — the recorder keeps and retries them; writes are idempotent —
 * and is started again; one that keeps dying leaves every write failing, so durable traffic is
 * refused rather than forwarded unrecorded. Never silent: each death is in `deaths` and in the
 * error every waiting write gets.
 */
export class RecordWriterThread {
  private worker!: Worker;
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 1;
  private failure: Error | null = null;
  private closed: Promise<void> | null = null;
  private closing = false;
  private readonly restarts: number[] = [];
  /** Times the thread died (exit or uncaught error), since the store opened. */
  deaths = 0;
  private readonly file: string;
  private readonly synchronous: 'FULL' | 'NORMAL';

  constructor(file: string, synchronous: 'FULL' | 'NORMAL') {
    this.file = file;
    this.synchronous = synchronous;
    this.start();
  }

  private start(): void {
    const worker = new Worker(new URL('./record-writer-worker.ts', import.meta.url), { workerData: { file: this.file, synchronous: this.synchronous } });
    this.worker = worker;
    let died = false;
    const death = (why: string) => {
      if (died || this.worker !== worker) return;
      died = true;
      if (this.closing) { this.failAll(new Error('recording writer thread closed')); return; }
      this.deaths++;
      const now = Date.now();
      while (this.restarts.length > 0 && now - this.restarts[0]! > RESTART_WINDOW_MS) this.restarts.shift();
      if (this.restarts.length >= MAX_RESTARTS) {
        this.failure = new Error(`recording writer thread ${why}; it died ${MAX_RESTARTS + 1} times within a minute and is not restarted: recording fails until the gateway restarts`);
        this.failAll(this.failure);
        return;
      }
      this.restarts.push(now);
      this.failAll(new Error(`recording writer thread ${why}; restarted`));
      void worker.terminate();
      this.start();
    };
    worker.on('message', (msg: { id?: number; error?: string; lost?: SessionOwner[] }) => {
      if (msg.id === undefined) return;
      const w = this.waiting.get(msg.id);
      this.waiting.delete(msg.id);
      if (this.waiting.size === 0) worker.unref();
      if (msg.lost) w?.reject(new SessionsTakenOverError(msg.lost));
      else if (msg.error) w?.reject(new Error(msg.error));
      else w?.resolve();
    });
    worker.on('error', (err: unknown) => death(`failed: ${err instanceof Error ? err.message : String(err)}`));
    worker.on('exit', (code) => death(`exited (${code})`));
    worker.unref();
  }

  private failAll(err: Error): void {
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  write(batch: RecordBatch): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ id, batch });
    });
  }

  close(): Promise<void> {
    this.closing = true;
    this.closed ??= new Promise<void>((resolve) => {
      if (this.failure) { resolve(); return; }
      this.worker.ref();
      this.worker.once('exit', () => resolve());
      this.worker.once('message', (msg: { closed?: boolean }) => { if (msg.closed) void this.worker.terminate(); });
      this.worker.postMessage({ close: true });
    });
    return this.closed;
  }
}
