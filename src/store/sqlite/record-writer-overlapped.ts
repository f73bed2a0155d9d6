import { DatabaseSync } from 'node:sqlite';
import { closeSync, fdatasync, fstatSync, openSync, statSync } from 'node:fs';
import { RecordBatchWriter } from './record-batch-sql.ts';
import type { RecordBatch } from '../types.ts';

interface Waiter { resolve: () => void; reject: (err: Error) => void }

/** How the -wal file is synced: fs.fdatasync, or a stand-in in tests. */
export type SyncFn = (fd: number, done: (err: NodeJS.ErrnoException | null) => void) => void;

/**
 * Continuous group commit with the fsync off the event loop (`recording.writer: overlapped`; the
 * default stays `inline`, which measured as fast and cheaper in CPU on 2 cores: docs/performance.md).
 *
 * A batch is committed on the event loop, on a connection of its own with synchronous=NORMAL: in
 * WAL mode that COMMIT appends the batch's frames to the -wal file (into the page cache, which
 * survives a crash of the gateway process) and does not sync. The batch becomes durable with an
 * fdatasync of the -wal file, which runs on libuv's thread pool while the event loop goes on
 * relaying and the next batch fills. At most one fdatasync is in flight: batches committed while
 * one runs wait for the next, which starts as soon as the running one ends. A batch is released
 * only by an fdatasync that started after its COMMIT returned, so everything it wrote is covered
 * (fsync covers the file's inode, whichever descriptor asks).
 *
 * Checkpoints stay SQLite's own: with synchronous=NORMAL it syncs the -wal before copying it into
 * the database and the database after, so the -wal is never reset under frames that are not in
 * the database durably.
 *
 * A failed fdatasync is not retried: after one, the kernel may have dropped the dirty pages it
 * could not write and a second fdatasync would report success for data that never reached the
 * disk. So every later write fails (the recorder keeps its batches and durable traffic is refused)
 * until the gateway restarts — fail closed, as PostgreSQL does.
 */
export class OverlappedRecordWriter {
  private readonly db: DatabaseSync;
  private readonly writer: RecordBatchWriter;
  private readonly walFile: string;
  private readonly fsync: boolean;
  private readonly sync: SyncFn;
  private fd = -1;
  private inFlight = false;
  /** Batches committed since the running fdatasync started: released by the next one. */
  private next: Waiter[] = [];
  private failure: Error | null = null;
  private closed = false;
  /** fdatasync calls made, and the batches they released (batches per sync is the group-commit factor at this level). */
  readonly stats = { syncs: 0, batches: 0 };

  constructor(file: string, fsync: boolean, sync: SyncFn = fdatasync) {
    this.walFile = `${file}-wal`;
    this.fsync = fsync;
    this.sync = sync;
    this.db = new DatabaseSync(file);
    this.db.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;');
    this.writer = new RecordBatchWriter(this.db);
  }

  /** Commits the batch now (throws if it cannot); resolves once it is durable. */
  write(batch: RecordBatch): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('recording writer closed'));
    try {
      this.writer.write(batch);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    this.stats.batches++;
    if (!this.fsync) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.next.push({ resolve, reject });
      if (!this.inFlight) this.startSync();
    });
  }

  private startSync(): void {
    const waiters = this.next;
    this.next = [];
    let fd: number;
    try {
      fd = this.walDescriptor();
    } catch (err) {
      this.fail(new Error(`could not open the recording WAL to sync it: ${(err as Error).message}`), waiters);
      return;
    }
    this.inFlight = true;
    this.stats.syncs++;
    this.sync(fd, (err) => {
      this.inFlight = false;
      if (err) {
        this.fail(new Error(`fdatasync of the recording WAL failed (${err.code ?? err.message}); recording fails until the gateway restarts`), waiters);
        return;
      }
      for (const w of waiters) w.resolve();
      if (this.next.length > 0) this.startSync();
    });
  }

  /**
   * The -wal file exists once the store has written (migrations run before recording). SQLite
   * only replaces the file when its last connection closes, which this one prevents while open;
   * the inode is still compared, so a descriptor to a replaced file is never synced instead.
   */
  private walDescriptor(): number {
    if (this.fd >= 0 && fstatSync(this.fd).ino === statSync(this.walFile).ino) return this.fd;
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    this.fd = openSync(this.walFile, 'r+');
    return this.fd;
  }

  private fail(err: Error, waiters: Waiter[]): void {
    this.failure = err;
    for (const w of [...waiters, ...this.next]) w.reject(err);
    this.next = [];
  }

  /** Waits for the running fdatasync, then closes the connection. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.inFlight || this.next.length > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    this.db.close();
  }
}
