import { DatabaseSync } from 'node:sqlite';
import { closeSync, constants, fdatasyncSync, fstatSync, openSync, readFileSync, readSync, rmSync, statSync, write, writeFileSync, writeSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { RecordBatchWriter } from './record-batch-sql.ts';
import type { RecordBatch } from '../types.ts';

/**
 * The recording's durability point as an append-only journal (`recording.writer: journal`).
 *
 * A batch is durable once one write of its record (opened O_DSYNC: the write returns when the
 * bytes are on the disk) into a preallocated file has returned — one system call on libuv's
 * thread pool while the event loop goes on relaying and the next batch fills. The SQLite rows
 * are written behind it: journaled batches are applied together, in one transaction on a
 * connection with synchronous=NORMAL (no fsync), when enough have gathered, after APPLY_MS, when
 * a batch ends a session or seals, and before any read through the store. So SQLite's per-row
 * work is spent on many statements at once, and its fsync is off the path.
 *
 * Crash recovery: the journal holds every batch since the last rotation; opening the store
 * applies them again (the batch writer skips rows that are there already, and refuses rows that
 * differ), then rotates. A rotation applies everything, syncs SQLite's -wal file, and writes a
 * marker of a new generation at the start of the file: records of older generations further on
 * are then stale and never replayed. Rotations happen when the file is full, before sessions are
 * deleted (retention must not be undone by a replay), at start and at close.
 *
 * Record: magic, payload length, generation, serial, CRC-32 of (generation, serial, payload),
 * then the batch as JSON. Replay stops at the first record that is torn, of another generation
 * or out of serial order.
 *
 * Like the overlapped writer, a failed journal write fails every later write until the gateway
 * restarts (after a failed write the file's tail is unknown, and a failed sync may have dropped
 * pages the next one would report as written): fail closed.
 *
 * One gateway per data directory: batches are released before SQLite checks session ownership
 * (the check still runs when they are applied, and fails loudly).
 */
export class JournalRecordWriter {
  private readonly db: DatabaseSync;
  private readonly writer: RecordBatchWriter;
  private readonly walFile: string;
  private readonly fd: number;
  private readonly lockFile: string;
  private readonly capacity: number;
  private generation = 0;
  private serial = 0;
  private offset = 0;
  /** Bytes of the file written (zeros ahead of the records included). */
  private allocated = 0;
  private inFlight = 0;
  /** Journaled, released, not yet in SQLite, in order. */
  private unapplied: RecordBatch[] = [];
  private unappliedEvents = 0;
  private applyTimer: NodeJS.Timeout | null = null;
  private applyFailure: Error | null = null;
  private failure: Error | null = null;
  private closed = false;

  constructor(file: string, options: { fsync: boolean; capacity?: number }) {
    this.walFile = `${file}-wal`;
    this.capacity = Math.max(MIN_JOURNAL_BYTES, options.capacity ?? JOURNAL_BYTES);
    this.db = new DatabaseSync(file);
    this.db.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;');
    this.writer = new RecordBatchWriter(this.db);
    const journalFile = `${file}-recjournal`;
    this.lockFile = `${journalFile}.lock`;
    takeLock(this.lockFile);
    this.fd = openSync(journalFile, constants.O_RDWR | constants.O_CREAT | (options.fsync ? constants.O_DSYNC : 0), 0o600);
    try {
      this.replay();
      this.preallocate();
      this.rotate();
    } catch (err) {
      closeSync(this.fd);
      if (this.walFd >= 0) closeSync(this.walFd);
      this.db.close();
      rmSync(this.lockFile, { force: true });
      throw err;
    }
  }

  /**
   * Resolves once the batch's record is on the disk; its rows reach SQLite shortly after. Up to
   * MAX_IN_FLIGHT records are written at once (the disk syncs them together); batches are
   * released and applied strictly in the order they were given, and a failure fails every later
   * batch not yet released, so a batch is never released ahead of an earlier one.
   */
  write(batch: RecordBatch): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('recording writer closed'));
    if (this.applyFailure && Date.now() - this.applyFailingSince > APPLY_FAILURE_REFUSE_MS) {
      // SQLite has not taken the journal's rows for a while: the store is broken, say so (the
      // recorder retries and refuses durable traffic meanwhile) rather than fill the journal.
      try {
        this.applyPending();
      } catch (err) {
        return Promise.reject(new Error(`the store has not taken the recording journal's rows for ${Math.round((Date.now() - this.applyFailingSince) / 1000)} s (${(err as Error).message})`));
      }
    }
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ batch, payload: Buffer.from(JSON.stringify(batch), 'utf8'), state: 'queued', resolve, reject, error: null });
      this.pump();
    });
  }

  /** Batches given to write, in order, until released or failed. */
  private readonly queue: PendingRecord[] = [];
  private extending = false;

  /** Starts the writes the queue allows: in order; rotation and growth only with nothing in flight. */
  private pump(): void {
    for (;;) {
      const next = this.queue.find((p) => p.state === 'queued');
      if (!next || this.inFlight >= MAX_IN_FLIGHT || this.extending) return;
      const length = HEADER + next.payload.length;
      const needsQuiet = length > this.capacity - HEADER || this.offset + length > this.capacity || this.offset + length > this.allocated;
      if (needsQuiet && this.inFlight > 0) return; // after the writes in flight land
      if (length > this.capacity - HEADER) {
        this.settleOversized(next);
        continue;
      }
      if (this.offset + length > this.capacity) {
        // Full: SQLite must take what the journal holds first. If it cannot (its disk is full
        // too), this batch and those after it fail and the recorder retries them; the journal
        // itself is intact.
        try {
          this.rotate();
        } catch (err) {
          this.failFrom(next, new Error(`the recording journal is full and the store cannot take its rows (${(err as Error).message})`));
          continue;
        }
      }
      if (this.offset + length > this.allocated) {
        // Zeros ahead of the records, a step at a time: a record then overwrites blocks the file
        // already has, so its O_DSYNC write need not also commit a change of the file's size.
        this.extending = true;
        this.extend(this.offset + length, (err) => {
          this.extending = false;
          if (err) this.failFrom(next, new Error(`could not extend the recording journal (${err.code ?? err.message})`));
          this.pump();
        });
        return;
      }
      this.startWrite(next);
    }
  }

  private startWrite(p: PendingRecord): void {
    const record = this.encode(p.payload);
    const at = this.offset;
    this.offset += record.length;
    p.state = 'writing';
    this.inFlight++;
    write(this.fd, record, 0, record.length, at, (err, written) => {
      this.inFlight--;
      if (err || written !== record.length) {
        this.fail(`write to the recording journal failed (${err?.code ?? err?.message ?? `short write of ${written} bytes`}); recording fails until the gateway restarts`);
        p.state = 'failed';
        p.error = this.failure;
      } else if (this.failure) {
        // An earlier write failed while this one was in flight: it is not released after it.
        p.state = 'failed';
        p.error = new Error(`an earlier recording batch failed (${this.failure.message})`);
      } else {
        p.state = 'written';
      }
      this.settle();
      this.pump();
    });
  }

  /** Releases written batches from the head of the queue, in order; a failure fails all after it. */
  private settle(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0];
      if (head.state === 'written') {
        this.queue.shift();
        if (!head.applied) this.queueApply(head.batch);
        head.resolve();
        continue;
      }
      if (head.state === 'failed') {
        this.queue.shift();
        head.reject(head.error!);
        // Whatever follows is not released ahead of it: failed too, whether written or not.
        for (const p of this.queue) if (p.state !== 'writing') { p.state = 'failed'; p.error ??= new Error(`an earlier recording batch failed (${head.error!.message})`); }
        continue;
      }
      return; // queued or writing: settles when it lands
    }
  }

  /** Fails `from` and every batch given after it that has not been written yet. */
  private failFrom(from: PendingRecord, err: Error): void {
    let on = false;
    for (const p of this.queue) {
      if (p === from) on = true;
      if (on && p.state === 'queued') { p.state = 'failed'; p.error = p === from ? err : new Error(`an earlier recording batch failed (${err.message})`); }
    }
    this.settle();
  }

  private settleOversized(p: PendingRecord): void {
    try {
      this.writeOversized(p.batch);
      p.state = 'written';
      // Applied already: settle must not apply it again.
      p.applied = true;
    } catch (err) {
      this.failFrom(p, err as Error);
      return;
    }
    this.settle();
  }

  /** A batch larger than the whole journal goes straight to SQLite, durably (rare: huge outputs). */
  private writeOversized(batch: RecordBatch): void {
    this.applyPending();
    this.writer.write(batch);
    fdatasyncSync(this.walDescriptor());
  }

  private encode(payload: Buffer): Buffer {
    const record = Buffer.allocUnsafe(HEADER + payload.length);
    this.serial++;
    record.writeUInt32LE(MAGIC, 0);
    record.writeUInt32LE(payload.length, 4);
    record.writeUInt32LE(this.generation, 8);
    record.writeUInt32LE(this.serial, 12);
    payload.copy(record, HEADER);
    record.writeUInt32LE(crc32(payload, crc32(record.subarray(8, 16))), 16);
    return record;
  }

  private queueApply(batch: RecordBatch): void {
    this.unapplied.push(batch);
    this.unappliedEvents += batch.events.length;
    // Ended sessions and seals are applied at once: readers expect a finished session in full.
    if (this.unappliedEvents >= APPLY_EVENTS || batch.sessionsEnded.length > 0 || batch.seals.length > 0) this.applyLater();
    else if (!this.applyTimer) this.applyTimer = setTimeout(this.applyLater, APPLY_MS);
  }

  /** Writes every journaled batch into SQLite now, in one transaction. Safe to call at any time. */
  applyPending(): void {
    if (this.applyTimer) { clearTimeout(this.applyTimer); this.applyTimer = null; }
    if (this.unapplied.length === 0) return;
    const batches = this.unapplied;
    try {
      this.writer.writeMany(batches);
      this.unapplied = [];
      this.unappliedEvents = 0;
      this.applyFailure = null;
    } catch (err) {
      // The batches are safe in the journal; SQLite gets them at the next try or the next start.
      if (!this.applyFailure) this.applyFailingSince = Date.now();
      this.applyFailure = err as Error;
      if (!this.applyTimer) this.applyTimer = setTimeout(this.applyLater, APPLY_RETRY_MS);
      throw err;
    }
  }

  /** A timer's apply: a failure is kept (see write) and retried, never thrown out of the timer. */
  private readonly applyLater = (): void => {
    this.applyTimer = null;
    try {
      this.applyPending();
    } catch {
      // this.applyFailure says why; the next write reports it once it has lasted.
    }
  };

  private applyFailingSince = 0;

  /**
   * Makes SQLite hold everything durably and starts a new generation at the head of the journal.
   * Called between writes only (see rotateWhenIdle).
   */
  rotate(): void {
    if (this.failure) throw this.failure;
    if (this.inFlight > 0 || this.extending) throw new Error('recording journal: cannot rotate while a write is in flight');
    // Until the marker is written nothing changes: a failure here leaves the journal as it was.
    this.applyPending();
    fdatasyncSync(this.walDescriptor());
    const generation = this.generation + 1;
    const marker = Buffer.alloc(HEADER);
    marker.writeUInt32LE(MAGIC, 0);
    marker.writeUInt32LE(0, 4);
    marker.writeUInt32LE(generation, 8);
    marker.writeUInt32LE(0, 12);
    marker.writeUInt32LE(crc32(Buffer.alloc(0), crc32(marker.subarray(8, 16))), 16);
    try {
      writeSync(this.fd, marker, 0, HEADER, 0);
      fdatasyncSync(this.fd);
    } catch (err) {
      // The head of the journal is unknown now: appending after it could be lost to a replay.
      throw this.fail(`writing the recording journal's head failed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); recording fails until the gateway restarts`);
    }
    this.generation = generation;
    this.serial = 0;
    this.offset = HEADER;
  }

  /** Rotates once no journal write is in flight (one in flight would land in the old generation). */
  async rotateWhenIdle(): Promise<void> {
    while (this.inFlight > 0 || this.extending) await new Promise<void>((resolve) => setImmediate(resolve));
    this.rotate();
  }

  /** Applies what the journal holds of its newest generation (after a crash: what SQLite may lack). */
  private replay(): void {
    const size = fstatSync(this.fd).size;
    if (size < HEADER) return;
    const header = Buffer.alloc(HEADER);
    let at = 0;
    let generation = -1;
    let expected = 0;
    const batches: RecordBatch[] = [];
    while (at + HEADER <= size) {
      readSync(this.fd, header, 0, HEADER, at);
      if (header.readUInt32LE(0) !== MAGIC) break;
      const length = header.readUInt32LE(4);
      const gen = header.readUInt32LE(8);
      const serial = header.readUInt32LE(12);
      if (generation === -1) generation = gen;
      if (gen !== generation || serial !== expected || at + HEADER + length > size) break;
      const payload = Buffer.alloc(length);
      if (length > 0) readSync(this.fd, payload, 0, length, at + HEADER);
      if (crc32(payload, crc32(header.subarray(8, 16))) !== header.readUInt32LE(16)) break;
      if (length > 0) batches.push(JSON.parse(payload.toString('utf8')) as RecordBatch);
      expected++;
      at += HEADER + length;
    }
    if (generation >= 0) this.generation = generation;
    if (batches.length > 0) this.writer.writeMany(batches);
  }

  /** The first step of zeros, at open (later steps are written as the records reach them). */
  private preallocate(): void {
    this.allocated = fstatSync(this.fd).size;
    const first = Math.min(this.capacity, ALLOCATE_STEP);
    if (this.allocated >= first) return;
    writeSync(this.fd, Buffer.alloc(first - this.allocated), 0, first - this.allocated, this.allocated);
    fdatasyncSync(this.fd);
    this.allocated = first;
  }

  /** Writes zeros from the end of the file to past `end` (a step at least) on the thread pool. */
  private extend(end: number, done: (err: NodeJS.ErrnoException | null) => void): void {
    const to = Math.min(this.capacity, Math.max(this.allocated + ALLOCATE_STEP, end));
    const zeros = Buffer.alloc(to - this.allocated);
    write(this.fd, zeros, 0, zeros.length, this.allocated, (err, written) => {
      if (err || written !== zeros.length) {
        done(err ?? Object.assign(new Error(`short write of ${written} bytes`), { code: 'EIO' }));
        return;
      }
      this.allocated = to;
      done(null);
    });
  }

  private walFd = -1;

  /** The -wal file's descriptor, reopened if SQLite replaced the file (compared by inode). */
  private walDescriptor(): number {
    if (this.walFd >= 0 && fstatSync(this.walFd).ino === statSync(this.walFile).ino) return this.walFd;
    if (this.walFd >= 0) closeSync(this.walFd);
    this.walFd = -1;
    this.walFd = openSync(this.walFile, 'r+');
    return this.walFd;
  }

  private fail(message: string): Error {
    this.failure = new Error(message);
    return this.failure;
  }

  /** Waits for the write in flight, applies and rotates, then closes. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.inFlight > 0 || this.extending || this.queue.length > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    try {
      if (!this.failure) this.rotate();
    } finally {
      if (this.applyTimer) clearTimeout(this.applyTimer);
      if (this.walFd >= 0) closeSync(this.walFd);
      closeSync(this.fd);
      this.db.close();
      rmSync(this.lockFile, { force: true });
    }
  }
}

/**
 * The journal is one process's: a second gateway on the same data directory would overwrite its
 * records. The lock file names the owner's pid; a lock whose process is gone is taken over.
 */
function takeLock(lockFile: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(lockFile, String(process.pid), { flag: 'wx', mode: 0o600 });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number(readFileSync(lockFile, 'utf8').trim());
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
      throw new Error(`the recording journal ${lockFile.slice(0, -'.lock'.length)} is in use by process ${owner} (another gateway on this data directory?)`);
    }
    rmSync(lockFile, { force: true });
  }
  throw new Error(`could not lock the recording journal (${lockFile})`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface PendingRecord {
  batch: RecordBatch;
  payload: Buffer;
  state: 'queued' | 'writing' | 'written' | 'failed';
  resolve: () => void;
  reject: (err: Error) => void;
  error: Error | null;
  /** Written to SQLite directly (a batch larger than the journal). */
  applied?: boolean;
}

/** Journal writes at once: two overlap on this project's disk (≈2-3x the writes per second of one). */
const MAX_IN_FLIGHT = 2;

const MAGIC = 0x4a524847; // "GHRJ"
const HEADER = 20;
/** Journal size: at ~2 KiB per batch, a rotation (one SQLite sync) every ~8,000 batches. */
const JOURNAL_BYTES = 16 * 1024 * 1024;
const MIN_JOURNAL_BYTES = 64 * 1024;
/** Zeros written ahead of the records at a time. */
const ALLOCATE_STEP = 1024 * 1024;
/** Journaled events that make an apply start at once, and how long others may wait for one. */
const APPLY_EVENTS = 1024;
const APPLY_MS = 50;
const APPLY_RETRY_MS = 1000;
/** How long SQLite may fail to take the journal's rows before writes are refused. */
const APPLY_FAILURE_REFUSE_MS = 5000;
