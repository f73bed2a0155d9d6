// Git pkt-line framing: 4 lowercase hex digits giving the length of the line including those 4
// bytes, then the payload. 0000 is flush, 0001 delim and 0002 response-end (protocol v2); 0003 is
// invalid. The reader is incremental over arbitrary chunk boundaries and returns payloads as views
// into the pushed chunks whenever a line lies within one chunk, so framing costs no copy.

/** Largest pkt-line git writes or accepts, header included (LARGE_PACKET_MAX). */
export const MAX_PKT_LEN = 65520;
/** Largest payload of a pkt-line. */
export const MAX_PKT_PAYLOAD = MAX_PKT_LEN - 4;

export class GitProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GitProtocolError';
  }
}

export type PktLine =
  | { kind: 'data'; payload: Buffer }
  | { kind: 'flush' }
  | { kind: 'delim' }
  | { kind: 'response-end' };

export const FLUSH_PKT: Buffer = Buffer.from('0000');
export const DELIM_PKT: Buffer = Buffer.from('0001');
export const RESPONSE_END_PKT: Buffer = Buffer.from('0002');

// Shared singletons: control packets carry no data, so callers never need distinct objects.
const FLUSH: PktLine = Object.freeze({ kind: 'flush' });
const DELIM: PktLine = Object.freeze({ kind: 'delim' });
const RESPONSE_END: PktLine = Object.freeze({ kind: 'response-end' });

const HEX = '0123456789abcdef';
const EMPTY = Buffer.alloc(0);

function writeHeader(out: Buffer, len: number): void {
  out[0] = HEX.charCodeAt((len >> 12) & 15);
  out[1] = HEX.charCodeAt((len >> 8) & 15);
  out[2] = HEX.charCodeAt((len >> 4) & 15);
  out[3] = HEX.charCodeAt(len & 15);
}

export function encodePktLine(payload: string | Buffer): Buffer {
  const len = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  if (len > MAX_PKT_PAYLOAD) throw new GitProtocolError(`pkt-line payload of ${len} bytes exceeds ${MAX_PKT_PAYLOAD}`);
  const out = Buffer.allocUnsafe(4 + len);
  writeHeader(out, 4 + len);
  if (typeof payload === 'string') out.write(payload, 4);
  else payload.copy(out, 4);
  return out;
}

/** Payload without its trailing LF, as a string (git's PACKET_READ_CHOMP_NEWLINE). */
export function pktText(payload: Buffer, encoding: BufferEncoding = 'utf8'): string {
  const end = payload.length > 0 && payload[payload.length - 1] === 0x0a ? payload.length - 1 : payload.length;
  return payload.toString(encoding, 0, end);
}

function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37; // git's hexval accepts upper case too
  return -1;
}

function printable(b: Buffer): string {
  return JSON.stringify(b.toString('latin1'));
}

export class PktLineReader {
  // Pushed chunks not yet fully consumed; `offset` is the read position in chunks[0].
  private chunks: Buffer[] = [];
  private offset = 0;
  private total = 0;
  private consumedBytes = 0;

  /** bytes buffered but not yet returned */
  get buffered(): number {
    return this.total;
  }

  /** Bytes returned so far (as lines or remainder), for error messages and accounting. */
  get consumed(): number {
    return this.consumedBytes;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  next(): PktLine | null {
    if (this.total < 4) return null;
    const header = this.peek(4);
    let len = 0;
    for (let i = 0; i < 4; i++) {
      const v = hexVal(header[i]);
      if (v < 0) throw new GitProtocolError(`invalid pkt-line length ${printable(header)} at byte ${this.consumedBytes}`);
      len = (len << 4) | v;
    }
    if (len < 4) {
      if (len === 3) throw new GitProtocolError(`invalid pkt-line length "0003" at byte ${this.consumedBytes}`);
      this.skip(4);
      return len === 0 ? FLUSH : len === 1 ? DELIM : RESPONSE_END;
    }
    if (len > MAX_PKT_LEN) {
      throw new GitProtocolError(`pkt-line length ${len} exceeds ${MAX_PKT_LEN} at byte ${this.consumedBytes}`);
    }
    if (this.total < len) return null;
    this.skip(4);
    return { kind: 'data', payload: this.take(len - 4) };
  }

  /** takes whatever raw bytes remain buffered (used when the stream switches to raw pack data) */
  takeRemainder(): Buffer {
    return this.take(this.total);
  }

  /** Like takeRemainder but without joining chunks: views of what remains, in order. */
  takeRemainderChunks(): Buffer[] {
    const out: Buffer[] = [];
    for (let i = 0; i < this.chunks.length; i++) {
      out.push(i === 0 && this.offset > 0 ? this.chunks[0].subarray(this.offset) : this.chunks[i]);
    }
    this.consumedBytes += this.total;
    this.chunks = [];
    this.offset = 0;
    this.total = 0;
    return out;
  }

  // The first n buffered bytes without consuming them (n <= total). Copies only across chunks.
  private peek(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.chunks[0];
    if (first.length - this.offset >= n) return first.subarray(this.offset, this.offset + n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let off = this.offset;
    for (let i = 0; filled < n; i++) {
      const c = this.chunks[i];
      const k = Math.min(n - filled, c.length - off);
      c.copy(out, filled, off, off + k);
      filled += k;
      off = 0;
    }
    return out;
  }

  private skip(n: number): void {
    this.total -= n;
    this.consumedBytes += n;
    while (n > 0) {
      const first = this.chunks[0];
      const avail = first.length - this.offset;
      if (n < avail) {
        this.offset += n;
        return;
      }
      n -= avail;
      this.chunks.shift();
      this.offset = 0;
    }
  }

  private take(n: number): Buffer {
    const out = this.peek(n);
    this.skip(n);
    return out;
  }
}

/** Parses a complete byte sequence into pkt-lines; throws if it ends in the middle of one. */
export function readAllPktLines(data: Buffer): PktLine[] {
  const reader = new PktLineReader();
  reader.push(data);
  const lines: PktLine[] = [];
  for (let line = reader.next(); line !== null; line = reader.next()) lines.push(line);
  if (reader.buffered > 0) throw new GitProtocolError(`truncated pkt-line: ${reader.buffered} byte(s) left over`);
  return lines;
}
