// Pull-style reading for the short handshake phases (startup, authentication, upstream login).
// After the handshake the session switches to the push-style FrameScanner for relaying.
import type { Duplex } from 'node:stream';
import { ProtocolError } from './codec/frame-scanner.ts';
import { MAX_STARTUP_PACKET } from './codec/protocol.ts';

export interface TypedMessage { type: number; body: Buffer }

/** Bytes a handshake may hold unread: more than any message of the phase needs (a startup packet is at most 10,000). */
export const DEFAULT_MAX_HANDSHAKE_BYTES = 256 * 1024;

export class HandshakeReader {
  private readonly stream: Duplex;
  private readonly maxBuffered: number;
  private buffered: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private ended: Error | null = null;
  private readonly onData = (chunk: Buffer): void => {
    if (this.buffered.length + chunk.length > this.maxBuffered) {
      // A peer that sends more than the phase can use (before authentication, at that): stop
      // reading, so its bytes cost nothing more, and fail the handshake.
      this.stream.pause();
      const err = new ProtocolError(`more than ${this.maxBuffered} bytes sent during the connection handshake`, '54000');
      this.ended ??= err;
      this.wake();
      this.onOverflow?.(err); // nobody may be reading right now (the gateway waits on the target)
      return;
    }
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    this.wake();
  };
  private readonly onEnd = (): void => { this.ended ??= new Error('connection closed'); this.wake(); };
  private readonly onError = (err: Error): void => { this.ended ??= err; this.wake(); };

  private readonly onOverflow: ((err: ProtocolError) => void) | undefined;

  constructor(stream: Duplex, maxBuffered = DEFAULT_MAX_HANDSHAKE_BYTES, onOverflow?: (err: ProtocolError) => void) {
    this.stream = stream;
    this.maxBuffered = maxBuffered;
    this.onOverflow = onOverflow;
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
    // A stream paused by an earlier phase stays paused when a listener is added: resume it.
    stream.resume();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private async need(n: number, deadline: number): Promise<void> {
    while (this.buffered.length < n) {
      if (this.ended) throw this.ended;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new HandshakeTimeout();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiter = () => { clearTimeout(timer); resolve(); };
      });
    }
  }

  private take(n: number): Buffer {
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  get pendingBytes(): number { return this.buffered.length; }

  /** An untyped startup-phase packet; returns its body (after the length word). */
  async readStartupPacket(deadline: number): Promise<Buffer> {
    await this.need(4, deadline);
    const length = this.buffered.readInt32BE(0);
    if (length < 8 || length > MAX_STARTUP_PACKET) throw new ProtocolError(`invalid startup packet length ${length}`);
    await this.need(length, deadline);
    return this.take(length).subarray(4);
  }

  /** First byte without consuming it (to spot a TLS ClientHello sent without SSLRequest). */
  async peekByte(deadline: number): Promise<number> {
    await this.need(1, deadline);
    return this.buffered[0];
  }

  async readMessage(deadline: number, maxBody: number): Promise<TypedMessage> {
    await this.need(5, deadline);
    const type = this.buffered[0];
    const length = this.buffered.readInt32BE(1);
    if (length < 4) throw new ProtocolError(`invalid message length ${length}`);
    if (length - 4 > maxBody) throw new ProtocolError(`message of ${length} bytes is too large at this stage`, '54000');
    await this.need(1 + length, deadline);
    const frame = this.take(1 + length);
    return { type, body: frame.subarray(5) };
  }

  private detached = false;

  /** Stops listening and hands back any bytes read past the handshake. */
  detach(): Buffer {
    // Once only: a later call must not pause a stream that someone else reads by then.
    if (this.detached) return Buffer.alloc(0);
    this.detached = true;
    // Pause first: without a 'data' listener a flowing stream would drop what arrives next.
    this.stream.pause();
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    this.stream.off('error', this.onError);
    const rest = this.buffered;
    this.buffered = Buffer.alloc(0);
    return rest;
  }
}

export class HandshakeTimeout extends Error {
  constructor() { super('timed out during connection handshake'); }
}
