// The SHA-256 of a file's content as it crosses the gateway (WRITE requests of an upload, DATA
// replies of a download), in file order. Data that arrives ahead of a gap is held until the gap
// fills, within a budget shared by every file of the channel: however many handles a client
// opens, one channel never holds more than the budget (exceeding it throws, and the tracker
// closes the channel).
import { createHash, type Hash } from 'node:crypto';
import { ContentScan, type ContentScanResult } from '../../../masking/content-scan.ts';

/** Out-of-order bytes held across all files of one channel. */
export class ReorderBudget {
  readonly limit: number;
  used = 0;

  constructor(limit: number) {
    this.limit = limit;
  }
}

export class ReorderBudgetExceededError extends Error {}

export class ContentHash {
  private readonly hash: Hash = createHash('sha256');
  /** The detectors read the same stream, in file order (see content-scan.ts). */
  private readonly scan = new ContentScan();
  private readonly budget: ReorderBudget;
  /** Next offset the hash expects. */
  private next = 0;
  private readonly early = new Map<number, Buffer>();
  private earlyBytes = 0;
  /** Highest offset written or read. */
  size = 0;
  /** Offset of the first read or write (above 0: a resumed transfer, reget / reput). */
  start: number | null = null;
  /** Bytes actually read or written: what crossed the gateway, not the file's size. */
  transferred = 0;
  /** False once the content stopped being one stream from offset 0 (no hash then). */
  private sequential = true;
  /** Why there is no hash, when the reason is more specific than "not contiguous". */
  private note: string | null = null;

  constructor(budget: ReorderBudget) {
    this.budget = budget;
  }

  /** The first read or write says where the transfer starts: past 0 it resumes one, and hashes only part. */
  started(offset: number): void {
    if (this.start !== null) return;
    this.start = offset;
    if (offset > 0) this.giveUp();
  }

  /** Data placed at `offset`. Throws ReorderBudgetExceededError when holding it would exceed the channel's budget. */
  add(offset: number, data: Buffer): void {
    this.size = Math.max(this.size, offset + data.length);
    this.transferred += data.length;
    if (!this.sequential) return;
    if (offset === this.next) {
      this.hash.update(data);
      this.scan.add(data);
      this.next += data.length;
      let more: Buffer | undefined;
      while ((more = this.early.get(this.next)) !== undefined) {
        this.early.delete(this.next);
        this.release(more.length);
        this.hash.update(more);
        this.scan.add(more);
        this.next += more.length;
      }
      return;
    }
    // Behind the stream, or on top of data already held: the content is rewritten, not streamed.
    if (offset < this.next || this.early.has(offset)) return this.giveUp();
    if (this.budget.used + data.length > this.budget.limit) {
      throw new ReorderBudgetExceededError(`out-of-order SFTP data on this channel exceeds the gateway's reorder budget of ${this.budget.limit} bytes`);
    }
    this.early.set(offset, Buffer.from(data)); // copied: the chunk's owner may reuse it
    this.earlyBytes += data.length;
    this.budget.used += data.length;
  }

  /** The content changed other than through this stream (server-side copy): no hash. */
  changedElsewhere(note: string): void {
    this.note ??= note;
    this.giveUp();
  }

  /** What the record says about the content; frees what is held. */
  finish(): ({ sha256: string } | { sha256: null; hashNote: string }) & ContentScanResult {
    const complete = this.sequential && this.early.size === 0 && this.next === this.size;
    const hashNote = this.note ?? (this.start !== null && this.start > 0
      ? `resumed at byte ${this.start}: only the rest of the file crossed the gateway, so no content hash of the file`
      : 'the transfer was not one contiguous stream (partial or out of order), so no content hash');
    const out = complete ? { sha256: this.hash.digest('hex'), ...this.scan.finish() } : { sha256: null, hashNote, ...this.scan.finish() };
    this.giveUp();
    return out;
  }

  private giveUp(): void {
    this.sequential = false;
    this.early.clear();
    this.release(this.earlyBytes);
  }

  private release(bytes: number): void {
    this.earlyBytes -= bytes;
    this.budget.used -= bytes;
  }
}
