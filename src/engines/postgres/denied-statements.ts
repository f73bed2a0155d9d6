// How a statement the policy denies is refused exactly where PostgreSQL would have refused it:
// instead of the client's Query or Parse, the server gets a statement that fails at once — in
// parse analysis, before anything runs — carrying a fresh random marker; its ErrorResponse is
// replaced, on the way back, by the policy's (SQLSTATE 42501, naming the rule). The server itself
// then aborts the transaction, skips the rest of the extended-protocol batch up to Sync and
// answers ReadyForQuery with the right status, so the session stays exactly as usable as after any
// failed statement, pipelining included. Pure: no sockets.
import { randomBytes } from 'node:crypto';
import { errorResponse, typed, type ErrorInfo } from './codec/encode.ts';
import { Backend, Frontend } from './codec/protocol.ts';

/** Marker of one denial: unguessable, so no statement of the client's can pose as one. */
export function newDenialMarker(): string {
  return `gatehouse-policy-denied-${randomBytes(16).toString('hex')}`;
}

/** A literal cast to integer fails in parse analysis (22P02), with the literal in the message. */
const failingSql = (marker: string): string => `SELECT '${marker}'::integer`;

/** The Query that takes the place of a denied one. */
export function deniedQuery(marker: string): Buffer {
  return typed(Frontend.Query, Buffer.from(`${failingSql(marker)}\0`, 'latin1'));
}

/** The Parse that takes the place of a denied one: same statement name, so the server forgets nothing it should not. */
export function deniedParse(statementName: Buffer, marker: string): Buffer {
  return typed(Frontend.Parse, Buffer.concat([statementName, Buffer.from([0]), Buffer.from(`${failingSql(marker)}\0`, 'latin1'), Buffer.from([0, 0])]));
}

/** ErrorResponses above this size are not ours (ours are short): passed through unread. */
const MAX_READ_ERROR = 64 * 1024;

/**
 * Replaces, in the server's byte stream, each ErrorResponse that carries a pending marker with the
 * policy's error. Every other byte passes through unchanged and uncopied, except message headers
 * and ErrorResponses, which are small. Used only by sessions that had a statement denied.
 */
export class DeniedErrorRewriter {
  private readonly pending = new Map<string, Buffer>();
  private readonly header = Buffer.alloc(5);
  private headerFill = 0;
  /** Bytes of the current (non-error, or too large) message still to pass through. */
  private passRemaining = 0;
  private error: Buffer | null = null;
  private errorFill = 0;

  add(marker: string, error: ErrorInfo): void {
    this.pending.set(marker, errorResponse(error));
  }

  get waiting(): number { return this.pending.size; }

  push(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.passRemaining > 0) {
        const n = Math.min(this.passRemaining, chunk.length - i);
        out.push(chunk.subarray(i, i + n));
        this.passRemaining -= n;
        i += n;
        continue;
      }
      if (this.error) {
        const n = Math.min(this.error.length - this.errorFill, chunk.length - i);
        chunk.copy(this.error, this.errorFill, i, i + n);
        this.errorFill += n;
        i += n;
        if (this.errorFill === this.error.length) {
          out.push(this.replacementFor(this.error));
          this.error = null;
        }
        continue;
      }
      const n = Math.min(5 - this.headerFill, chunk.length - i);
      chunk.copy(this.header, this.headerFill, i, i + n);
      this.headerFill += n;
      i += n;
      if (this.headerFill < 5) break;
      this.headerFill = 0;
      const length = this.header.readInt32BE(1);
      if (this.header[0] === Backend.ErrorResponse && length >= 4 && length <= MAX_READ_ERROR && this.pending.size > 0) {
        this.error = Buffer.allocUnsafe(1 + length);
        this.header.copy(this.error, 0, 0, 5);
        this.errorFill = 5;
        if (this.errorFill === this.error.length) { out.push(this.replacementFor(this.error)); this.error = null; }
      } else {
        out.push(Buffer.from(this.header));
        this.passRemaining = Math.max(0, length - 4);
      }
    }
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  private replacementFor(message: Buffer): Buffer {
    for (const [marker, replacement] of this.pending) {
      if (message.includes(marker, 5, 'latin1')) {
        this.pending.delete(marker);
        return replacement;
      }
    }
    return message;
  }
}
