import { Worker } from 'node:worker_threads';
import { SessionsTakenOverError, type RecordBatch, type SessionOwner } from '../types.ts';

interface Waiter { resolve: () => void; reject: (err: Error) => void }

/** Main-thread side of the recording writer thread. */
export class RecordWriterThread {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 1;
  private failure: Error | null = null;
  private closed: Promise<void> | null = null;

  constructor(file: string, synchronous: 'FULL' | 'NORMAL') {
    this.worker = new Worker(new URL('./record-writer-worker.ts', import.meta.url), { workerData: { file, synchronous } });
    this.worker.on('message', (msg: { id?: number; error?: string; lost?: SessionOwner[] }) => {
      if (msg.id === undefined) return;
      const w = this.waiting.get(msg.id);
      this.waiting.delete(msg.id);
      if (this.waiting.size === 0) this.worker.unref();
      if (msg.lost) w?.reject(new SessionsTakenOverError(msg.lost));
      else if (msg.error) w?.reject(new Error(msg.error));
      else w?.resolve();
    });
    this.worker.on('error', (err: unknown) => this.failAll(err instanceof Error ? err : new Error(String(err))));
    this.worker.on('exit', (code) => this.failAll(new Error(`recording writer thread exited (${code})`)));
    this.worker.unref();
  }

  private failAll(err: Error): void {
    this.failure ??= err;
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
