// Bounded capture of a command's output: the first `limit` bytes are kept as a sample, every
// byte is counted and hashed, so the record states the full size and content hash even when
// the sample is cut.
import { createHash, type Hash } from 'node:crypto';

export interface CapturedOutput {
  bytes: number;
  sha256: string;
  /** The first bytes, as UTF-8 text when they decode cleanly, else base64. */
  sample: string;
  encoding: 'utf8' | 'base64';
  truncated: boolean;
}

export class BoundedCapture {
  private readonly limit: number;
  private readonly hash: Hash = createHash('sha256');
  private readonly kept: Buffer[] = [];
  private keptBytes = 0;
  bytes = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  add(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    if (this.keptBytes < this.limit) {
      const take = Math.min(chunk.length, this.limit - this.keptBytes);
      // Copied: the channel may reuse the buffer it handed us.
      this.kept.push(Buffer.from(chunk.subarray(0, take)));
      this.keptBytes += take;
    }
  }

  result(): CapturedOutput {
    const sample = Buffer.concat(this.kept, this.keptBytes);
    const text = sample.toString('utf8');
    // A cut may split a multi-byte character: a trailing replacement character alone is not binary.
    const clean = !text.slice(0, -1).includes('\uFFFD') && (!text.endsWith('\uFFFD') || this.bytes > this.keptBytes);
    return {
      bytes: this.bytes, sha256: this.hash.digest('hex'), truncated: this.bytes > this.keptBytes,
      ...(clean ? { sample: text.endsWith('\uFFFD') ? text.slice(0, -1) : text, encoding: 'utf8' as const } : { sample: sample.toString('base64'), encoding: 'base64' as const }),
    };
  }
}
