// Incremental framing of typed protocol messages: 1 type byte, then a 4-byte big-endian length
// that counts itself but not the type byte. The scanner only observes: callers forward the raw
// chunks they fed it, so framing costs no copy for frames that fit in one chunk.

export class ProtocolError extends Error {
  readonly sqlState: string;
  constructor(message: string, sqlState = '08P01') {
    super(message);
    this.sqlState = sqlState;
  }
}

export interface FrameHandler {
  /** A whole frame; its body is buf[start, end). The buffer may be reused after the call returns. */
  frame(type: number, buf: Buffer, start: number, end: number): void;
  /** A frame too large to buffer whose type allows streaming: only its header is seen. */
  streamed?(type: number, bodyLength: number): void;
  /** A piece of a streamed frame's body as it passes (called once per chunk it spans). */
  streamedData?(type: number, bytes: number): void;
}

export interface FrameScannerOptions {
  /** Largest frame body buffered for inspection; larger ones are streamed or rejected. */
  maxFrameBytes: number;
  /** Frames of these types above `streamAbove` bytes are passed through without buffering. */
  streamable?: (type: number) => boolean;
  streamAbove?: number;
  /** Even streamed frames may not exceed this (PostgreSQL's own limit is 1 GiB − 1). */
  maxStreamedBytes?: number;
}

const PG_MAX_ALLOC = 0x3fffffff;

const HEADER = 5;

/** Frames up to this size get their buffer at once; larger ones collect pieces as they arrive. */
const ALLOCATE_UP_FRONT = 64 * 1024;
/**
 * A large frame's pieces are moved into one buffer of its full size once 1/COMMIT_FRACTION of it
 * has arrived: a peer must send a quarter of what it claims before the gateway allocates it all,
 * and the frame does not sit in memory twice (pieces plus their join) when it completes.
 */
const COMMIT_FRACTION = 4;
const EMPTY = Buffer.alloc(0);

export class FrameScanner {
  private readonly handler: FrameHandler;
  private readonly maxFrameBytes: number;
  private readonly streamable: (type: number) => boolean;
  private readonly streamAbove: number;
  private readonly maxStreamedBytes: number;

  private readonly header = Buffer.alloc(HEADER);
  private headerFill = 0;
  private body: Buffer | null = null;
  /** The pieces of a large frame still arriving (see beginPartial). */
  private parts: Buffer[] | null = null;
  private bodyLength = 0;
  private bodyFill = 0;
  private bodyType = 0;
  private skipRemaining = 0;
  private skipType = 0;

  constructor(handler: FrameHandler, options: FrameScannerOptions) {
    this.handler = handler;
    this.maxFrameBytes = options.maxFrameBytes;
    this.streamable = options.streamable ?? (() => false);
    this.streamAbove = options.streamAbove ?? 256 * 1024;
    this.maxStreamedBytes = options.maxStreamedBytes ?? PG_MAX_ALLOC;
  }

  /**
   * Bytes at the end of what was pushed that belong to a frame not yet complete, or -1 when that
   * frame is being streamed (its start is long gone). 0 at a message boundary.
   */
  get partialBytes(): number {
    if (this.skipRemaining > 0) return -1;
    if (this.body !== null) return HEADER + this.bodyFill;
    return this.headerFill;
  }

  /** True when no partial frame is pending (the stream is at a message boundary). */
  get atBoundary(): boolean {
    return this.headerFill === 0 && this.body === null && this.skipRemaining === 0;
  }

  push(chunk: Buffer): void {
    let off = 0;
    const len = chunk.length;
    while (off < len) {
      if (this.skipRemaining > 0) {
        const n = Math.min(this.skipRemaining, len - off);
        this.skipRemaining -= n;
        off += n;
        this.handler.streamedData?.(this.skipType, n);
        continue;
      }
      if (this.body !== null) {
        const n = Math.min(this.bodyLength - this.bodyFill, len - off);
        if (this.parts) this.parts.push(chunk.subarray(off, off + n));
        else chunk.copy(this.body, this.bodyFill, off, off + n);
        this.bodyFill += n;
        off += n;
        if (this.parts && this.bodyFill * COMMIT_FRACTION >= this.bodyLength && this.bodyFill < this.bodyLength) this.commitToBody();
        if (this.bodyFill === this.bodyLength) {
          const body = this.parts ? Buffer.concat(this.parts, this.bodyLength) : this.body;
          this.body = null;
          this.parts = null;
          this.handler.frame(this.bodyType, body, 0, body.length);
        }
        continue;
      }
      if (this.headerFill > 0 || len - off < HEADER) {
        const n = Math.min(HEADER - this.headerFill, len - off);
        chunk.copy(this.header, this.headerFill, off, off + n);
        this.headerFill += n;
        off += n;
        if (this.headerFill < HEADER) continue;
        this.headerFill = 0;
        const type = this.header[0];
        const bodyLength = this.checkLength(type, this.header.readInt32BE(1));
        this.beginPartial(type, bodyLength, chunk, off);
        off = this.consumedTo;
        continue;
      }
      const type = chunk[off];
      const bodyLength = this.checkLength(type, chunk.readInt32BE(off + 1));
      const start = off + HEADER;
      if (len - start >= bodyLength) {
        off = start + bodyLength;
        this.handler.frame(type, chunk, start, off);
      } else {
        this.beginPartial(type, bodyLength, chunk, start);
        off = this.consumedTo;
      }
    }
  }

  private consumedTo = 0;

  /** Starts a frame whose body continues past this chunk (or begins exactly at its end). */
  private beginPartial(type: number, bodyLength: number, chunk: Buffer, start: number): void {
    const available = chunk.length - start;
    if (available >= bodyLength) {
      this.consumedTo = start + bodyLength;
      this.handler.frame(type, chunk, start, start + bodyLength);
      return;
    }
    if (bodyLength > this.streamAbove && this.streamable(type)) {
      this.handler.streamed?.(type, bodyLength);
      if (available > 0) this.handler.streamedData?.(type, available);
      this.skipRemaining = bodyLength - available;
      this.skipType = type;
      this.consumedTo = chunk.length;
      return;
    }
    if (bodyLength <= ALLOCATE_UP_FRONT) {
      this.body = Buffer.allocUnsafe(bodyLength);
      chunk.copy(this.body, 0, start);
    } else {
      // A large frame is kept as the pieces that arrive and joined once complete: memory grows
      // with what the peer actually sent, not with what its 5-byte header claims.
      this.body = EMPTY;
      this.parts = [chunk.subarray(start)];
    }
    this.bodyLength = bodyLength;
    this.bodyFill = available;
    this.bodyType = type;
    this.consumedTo = chunk.length;
  }

  /** Moves the pieces of a large frame into one buffer of its declared size; later pieces are copied in. */
  private commitToBody(): void {
    const body = Buffer.allocUnsafe(this.bodyLength);
    let at = 0;
    for (const p of this.parts!) at += p.copy(body, at);
    this.parts = null;
    this.body = body;
  }

  private checkLength(type: number, length: number): number {
    if (length < 4) throw new ProtocolError(`invalid message length ${length} for message type 0x${type.toString(16)}`);
    const body = length - 4;
    if (body > this.maxFrameBytes && !(body <= this.maxStreamedBytes && this.streamable(type))) {
      const limit = this.streamable(type) ? this.maxStreamedBytes : this.maxFrameBytes;
      throw new ProtocolError(`message of ${length} bytes exceeds the gateway's limit of ${limit} bytes`, '54000');
    }
    return body;
  }
}
