// Secrets in files that cross the gateway (scp, SFTP): the content is never rewritten (that would
// corrupt the file), but it is read by the detectors as it passes and the record of the transfer
// says which detectors found how many secrets — never the values. Only the first
// CONTENT_SCAN_BYTES of each file are read, so a large transfer costs a bounded amount of CPU.
import { StreamMasker } from './detectors.ts';

/** Bytes of each file read by the detectors (the rest passes unread; the record says so). */
export const CONTENT_SCAN_BYTES = 4 * 1024 * 1024;

export interface ContentScanResult {
  /** Detector name and how many secrets it found; absent when none were found. */
  secretsFound?: Array<{ detector: string; count: number }>;
  /** Set when the file was longer than what was read. */
  secretsScannedBytes?: number;
}

export class ContentScan {
  private readonly masker = new StreamMasker();
  private readonly limit: number;
  private scanned = 0;
  private skipped = false;

  constructor(limit = CONTENT_SCAN_BYTES) {
    this.limit = limit;
  }

  /** The next bytes of the file, in order. */
  add(data: Buffer): void {
    const room = this.limit - this.scanned;
    if (room <= 0) {
      if (data.length > 0) this.skipped = true;
      return;
    }
    const part = data.length > room ? data.subarray(0, room) : data;
    if (part.length < data.length) this.skipped = true;
    this.scanned += part.length;
    // Bytes as latin1 characters (detectors are ASCII); what it would send is not used, only its findings.
    this.masker.feed(part.toString('latin1'));
  }

  finish(): ContentScanResult {
    this.masker.flush();
    const found = [...this.masker.counts].filter(([, n]) => n > 0).map(([detector, count]) => ({ detector, count }));
    return {
      ...(found.length > 0 ? { secretsFound: found } : {}),
      ...(this.skipped ? { secretsScannedBytes: this.scanned } : {}),
    };
  }
}
