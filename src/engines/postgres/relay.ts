// The steady state of a session: bytes flow both ways unchanged, while two FrameScanners let the
// StatementTracker see every message. A chunk from the client that carries a statement is held
// until that statement's record is durable (record before forward); chunks keep their order.
// Backpressure is end to end: a slow reader pauses the opposite writer, so memory stays flat.
import type { Duplex } from 'node:stream';
import { FrameScanner, ProtocolError } from './codec/frame-scanner.ts';
import { Backend, Frontend } from './codec/protocol.ts';
import type { StatementTracker } from './statement-tracker.ts';
import { noticeResponse, readyForQuery, type ErrorInfo } from './codec/encode.ts';
import { cStringEnd } from './codec/decode.ts';
import { repliesForUnsent } from './unsent-replies.ts';
import { DeniedErrorRewriter, deniedParse, deniedQuery, newDenialMarker } from './denied-statements.ts';
import { SqlState } from './codec/protocol.ts';
import type { SessionPolicy } from '../../policy/policy-service.ts';
import type { Verdict } from '../../policy/types.ts';
import type { Hold, HoldOutcome } from '../../approvals/approval-service.ts';
import { ResultMasker, type ColumnNameSource } from './masking/result-masker.ts';
import { ValueMasking } from '../../policy/mask-detectors.ts';
import type { MaskPlan } from '../../policy/policy.ts';

/** How the relay holds a statement for approval: the session creates the request and records its course. */
export interface StatementHolds {
  hold(verdict: Verdict, text: string): Hold;
}

/** A held message of the chunk being scanned: where it is, and what replaces it if it is not approved. */
interface HeldMessage { offset: number; length: number; type: number; statementName: Buffer | null; hold: Hold }

export interface RelayOptions {
  maxClientMessageBytes: number;
  maxServerMessageBytes: number;
  /** Hold each statement until its record is durable (false: the connection is best-effort). */
  recordBeforeForward: boolean;
  /** Decides on each Query and Parse before it is forwarded (src/policy/); null: nothing to decide. */
  policy?: SessionPolicy | null;
  /** Holds for approval (absent: a hold is refused like a deny). */
  holds?: StatementHolds | null;
  /** What result masking needs when a mask rule applies to the session (absent: results are never masked). */
  masking?: { names: ColumnNameSource; key: Buffer } | null;
}

export type RelayEnd =
  | { kind: 'client-terminated' } // Terminate message, then the client closed
  | { kind: 'client-closed' } // the client went away without Terminate
  | { kind: 'upstream-closed'; fatal: string | null } // with the FATAL error the target sent, if any
  | { kind: 'client-protocol-error'; error: ProtocolError }
  | { kind: 'upstream-protocol-error'; error: ProtocolError }
  | { kind: 'recording-failed'; error: Error }
  | { kind: 'stopped'; reason: string };

const TERMINATE = Buffer.from([Frontend.Terminate, 0, 0, 0, 4]);
const FLUSH = Buffer.from([Frontend.Flush, 0, 0, 0, 4]);

/** Largest incomplete server message held back so the client only ever sees whole messages. */
const MAX_HELD_TAIL = 1024 * 1024;

/** Client bytes held behind a pending durable write before the client socket is paused. */
const MAX_QUEUED_BYTES = 1024 * 1024;

/** A client chunk held back, with what the fail-closed path needs to answer for it unsent. */
interface Outgoing { chunk: Buffer; gate: Promise<void> | null; types: number[]; ordinal: number; boundaryAfter: boolean }

export class Relay {
  private readonly client: Duplex;
  private readonly upstream: Duplex;
  private readonly tracker: StatementTracker;
  private readonly clientScanner: FrameScanner;
  private readonly serverScanner: FrameScanner;
  private readonly outgoing: Outgoing[] = [];
  private readonly recordBeforeForward: boolean;
  private readonly policy: SessionPolicy | null;
  /**
   * While the policy decides, an incomplete client message is held back (from its first byte),
   * so that a denied statement never partly reaches the target: it is forwarded once complete.
   */
  private heldClientTail: Buffer | null = null;
  /** The held tail starts at the first byte of the incomplete message. */
  private tailHeld = false;
  /** Bytes of held tail in front of the chunk being scanned (frame offsets count from its start). */
  private tailLength = 0;
  /** Denied messages of the chunk being scanned and what replaces them (see denied-statements.ts). */
  private readonly substitutions: Array<{ offset: number; length: number; replacement: Buffer }> = [];
  /** Set once a statement was denied: turns the stand-in's error into the policy's. */
  private rewriter: DeniedErrorRewriter | null = null;
  /** A denied message whose first bytes had already been forwarded: the session must end. */
  private policyFailure: string | null = null;
  private readonly holds: StatementHolds | null;
  private readonly maskingDeps: { names: ColumnNameSource; key: Buffer } | null;
  /**
   * Set once a mask rule applies to the session (and kept: from then on the client is sent whole
   * frames the masker passes or rewrites, instead of the target's chunks).
   */
  private masker: ResultMasker | null = null;
  private maskPlan: MaskPlan | null = null;
  /** The client's socket asked to wait ('drain') while masking. */
  private clientFull = false;
  /** The held message of the chunk being scanned (one per chunk: everything behind it waits anyway). */
  private heldInChunk: HeldMessage | null = null;
  /** Requests waiting for a decision: withdrawn when the client cancels or goes away. */
  private readonly activeHolds = new Set<Hold>();
  /** Notices for the client that wait until the server's stream to it is between messages. */
  private readonly pendingNotices: Buffer[] = [];
  private waitingForGate = false;
  private upstreamBlocked = false;
  private clientPaused = false;
  private queuedBytes = 0;
  /** Terminate seen with nothing owed: end once queued bytes are forwarded. */
  private endAfterFlush = false;
  /** Terminate was forwarded (results were still owed): the backend will close. */
  private unpoolable = false;
  private finished = false;
  private resolveEnd!: (end: RelayEnd) => void;
  readonly done: Promise<RelayEnd>;

  constructor(client: Duplex, upstream: Duplex, tracker: StatementTracker, options: RelayOptions) {
    this.client = client;
    this.upstream = upstream;
    this.tracker = tracker;
    this.recordBeforeForward = options.recordBeforeForward;
    this.policy = options.policy ?? null;
    this.holds = options.holds ?? null;
    this.maskingDeps = options.masking ?? null;
    this.done = new Promise((resolve) => { this.resolveEnd = resolve; });
    this.clientScanner = new FrameScanner(
      { frame: this.onClientFrame, streamedData: (t, n) => tracker.clientStreamedData(t, n) },
      // Only COPY data may be larger than the message limit, and only while a COPY can be running.
      { maxFrameBytes: options.maxClientMessageBytes, streamable: (t) => t === Frontend.CopyData && tracker.copyInPossible },
    );
    this.serverScanner = new FrameScanner(
      {
        // A masked session's frames reach the tracker through the masker, as the client gets them.
        frame: (t, b, s, e) => {
          if (this.masker) this.masker.frame(t, b, s, e);
          else tracker.serverFrame(t, b, s, e);
        },
        streamed: (t, n) => tracker.serverStreamed(t, n),
        streamedData: (t, n) => tracker.serverStreamedData(t, n),
      },
      // A masked session sees every row whole (up to the message limit), to rewrite it.
      { maxFrameBytes: options.maxServerMessageBytes, streamable: (t) => (t === Backend.DataRow || t === Backend.CopyData) && this.masker === null },
    );
    tracker.masking = this.maskingDeps !== null && this.policy?.masking() != null;
  }

  start(leftover: Buffer): void {
    this.client.on('data', this.onClientData);
    this.client.on('end', this.onClientEnd);
    this.client.on('close', this.onClientEnd);
    this.client.on('error', this.onClientEnd);
    this.upstream.on('data', this.onUpstreamData);
    this.upstream.on('end', this.onUpstreamEnd);
    this.upstream.on('close', this.onUpstreamEnd);
    this.upstream.on('error', this.onUpstreamEnd);
    if (leftover.length > 0) this.onClientData(leftover);
    this.client.resume();
    this.upstream.resume();
  }

  /** Detaches from both streams (so a pooled upstream can be reset) without closing them. */
  detach(): void {
    this.client.off('data', this.onClientData);
    this.client.off('end', this.onClientEnd);
    this.client.off('close', this.onClientEnd);
    this.client.off('error', this.onClientEnd);
    this.upstream.off('data', this.onUpstreamData);
    this.upstream.off('end', this.onUpstreamEnd);
    this.upstream.off('close', this.onUpstreamEnd);
    this.upstream.off('error', this.onUpstreamEnd);
    this.upstream.off('drain', this.onUpstreamDrain);
    this.client.off('drain', this.onClientDrain);
    this.upstream.pause();
  }

  stop(reason: string): void {
    this.finish({ kind: 'stopped', reason });
  }

  /** The client has received whole messages only (nothing was cut off mid-message). */
  get serverAtBoundary(): boolean {
    return !this.clientMidMessage;
  }

  /** True when nothing is owed in either direction: the upstream may be reset and reused. */
  get reusable(): boolean {
    return !this.unpoolable && !this.masker?.waiting && this.outgoing.length === 0 && this.tracker.outstanding === 0 && !this.tracker.inCopy
      && this.clientScanner.atBoundary && this.serverScanner.atBoundary;
  }

  private finish(end: RelayEnd): void {
    if (this.finished) return;
    this.finished = true;
    for (const h of this.activeHolds) h.withdraw(end.kind === 'client-closed' || end.kind === 'client-terminated' ? 'the client went away' : 'the session ended');
    this.detach();
    this.resolveEnd(end);
  }

  /** Message types of the chunk being scanned (reused; copied only when the chunk is held). */
  private readonly chunkTypes: number[] = [];
  /** Discarding client messages up to the next Sync (after an unsent, failed segment). */
  private discardUntilSync = false;
  /** Where, in the chunk being scanned, the discarded part ended (after its Sync); -1: not in it. */
  private discardCut = -1;
  private scanning: Buffer | null = null;
  /** The upstream has been sent only whole exchanges (ending in Sync, Query, CopyDone/CopyFail). */
  private upstreamAtBoundary = true;
  /** Answers for unsent messages, waiting until the upstream has answered everything before them. */
  private deferredReplies: { types: number[]; ordinal: number } | null = null;

  private readonly onClientFrame = (type: number, buf: Buffer, start: number, end: number): void => {
    const inChunk = buf === this.scanning;
    if (this.discardUntilSync) {
      // Not sent and not recorded: the client already got the error for this segment.
      if (type === Frontend.Sync) {
        this.discardUntilSync = false;
        this.discardCut = inChunk ? this.tailLength + end : this.tailHeld ? end - start + 5 : -2;
        this.client.write(readyForQuery(this.tracker.txStatus === 0x49 ? 0x49 : 0x45));
      } else if (type === Frontend.Terminate) {
        this.tracker.clientFrame(type, buf, start, end);
      }
      return;
    }
    this.chunkTypes.push(type);
    const decided = type === Frontend.Query || type === Frontend.Parse || type === Frontend.FunctionCall;
    const verdict = decided && this.policy?.appliesTo('sql')
      ? this.decide(type, buf, start, end, inChunk ? this.tailLength + start - 5 : this.tailHeld ? 0 : -1)
      : undefined;
    this.tracker.clientFrame(type, buf, start, end, verdict);
    if (this.tracker.deferralStarted) {
      // This frame waits for an earlier answer: what precedes it may go ahead (see cutAt).
      this.tracker.deferralStarted = false;
      const gate = this.recordBeforeForward ? this.tracker.gateBeforeDeferral : null;
      this.tracker.gateBeforeDeferral = null;
      this.cut = { offset: inChunk ? this.tailLength + start - 5 : 0, gate, typesBefore: this.chunkTypes.length - 1, ordinal: this.tracker.nextOrdinal };
    }
  };

  /**
   * The policy's decision on a Query or Parse whose message starts at `offset` of what will be
   * forwarded (-1: its start was forwarded already). A denied one is replaced by a stand-in that
   * fails on the server at the same point (see denied-statements.ts).
   */
  private decide(type: number, buf: Buffer, start: number, end: number, offset: number): Verdict {
    // A fast-path FunctionCall names its function by OID only: it cannot be judged by text.
    const fastPath = type === Frontend.FunctionCall;
    const textStart = type === Frontend.Query || fastPath ? start : cStringEnd(buf, start, end) + 1;
    const text = fastPath ? '' : this.tracker.encoding.text(buf, textStart, cStringEnd(buf, textStart, end));
    let verdict = this.policy!.decide(fastPath ? { kind: 'sql-opaque', what: `a fast-path call of function OID ${buf.readUInt32BE(start)}` } : { kind: 'sql', text });
    if (verdict.decision === 'hold') {
      if (this.holds && offset >= 0 && !this.heldInChunk) {
        const hold = this.holds.hold(verdict, text);
        this.activeHolds.add(hold);
        this.heldInChunk = { offset, length: end - start + 5, type, statementName: type === Frontend.Parse ? Buffer.from(buf.subarray(start, textStart - 1)) : null, hold };
        this.sendNotice(noticeResponse({
          code: '00000', message: `gatehouse: this statement is held for approval: ${verdict.reason}; request ${hold.id}`,
          hint: `an approver runs: gatehouse approvals approve ${hold.id} (it is refused if not decided by ${new Date(hold.expiresAt).toISOString()})`,
        }));
        return verdict;
      }
      const why = !this.holds ? 'holding for approval is not available here' : 'another statement of the same message batch is already held';
      verdict = { ...verdict, decision: 'deny', reason: `${verdict.reason}; ${why}, so it is refused` };
    }
    if (verdict.decision !== 'deny') return verdict;
    if (offset < 0) {
      this.policyFailure = `a statement denied by the policy had partly been forwarded when the policy changed: ${verdict.reason}`;
      return verdict;
    }
    const marker = newDenialMarker();
    // A denied FunctionCall is answered like a failed one (ErrorResponse, ReadyForQuery): a failing Query does that.
    const replacement = type === Frontend.Parse ? deniedParse(buf.subarray(start, textStart - 1), marker) : deniedQuery(marker);
    this.substitutions.push({ offset, length: end - start + 5, replacement });
    (this.rewriter ??= new DeniedErrorRewriter()).add(marker, {
      code: SqlState.InsufficientPrivilege, message: `gatehouse: ${verdict.reason}`,
      detail: `policy version ${verdict.policyVersion}${verdict.rule ? `, rule "${verdict.rule}"` : ''}`,
    });
    return verdict;
  }

  /** What of the held tail and this chunk may be forwarded now; an incomplete message is kept back. */
  private forwardable(chunk: Buffer, deciding: boolean): Buffer {
    let forward = this.heldClientTail ? Buffer.concat([this.heldClientTail, chunk]) : chunk;
    this.heldClientTail = null;
    this.tailHeld = false;
    const partial = this.clientScanner.partialBytes;
    if (deciding && partial > 0) {
      const keep = Math.min(partial, forward.length);
      this.heldClientTail = Buffer.from(forward.subarray(forward.length - keep)); // a copy: the socket may reuse `chunk`
      this.tailHeld = keep === partial;
      forward = forward.subarray(0, forward.length - keep);
    }
    return forward;
  }

  /** The chunk with each denied message replaced by its stand-in; offsets recorded during the scan move with it. */
  private substitute(chunk: Buffer): Buffer {
    const subs = this.substitutions;
    const pieces: Buffer[] = [];
    let at = 0;
    for (const s of subs) {
      pieces.push(chunk.subarray(at, s.offset), s.replacement);
      at = s.offset + s.length;
    }
    pieces.push(chunk.subarray(at));
    const moved = (o: number): number => {
      let d = 0;
      for (const s of subs) if (s.offset < o) d += s.replacement.length - s.length;
      return o + d;
    };
    if (this.cut) this.cut.offset = moved(this.cut.offset);
    if (this.discardCut >= 0) this.discardCut = moved(this.discardCut);
    if (this.heldInChunk) this.heldInChunk.offset = moved(this.heldInChunk.offset);
    subs.length = 0;
    return Buffer.concat(pieces);
  }

  /** Where the chunk being scanned splits: frames from `offset` on wait for an earlier answer. */
  private cut: { offset: number; gate: Promise<void> | null; typesBefore: number; ordinal: number } | null = null;

  private readonly onClientData = (chunk: Buffer): void => {
    if (this.finished) return;
    const wasTerminated = this.tracker.terminated;
    const wasDiscarding = this.discardUntilSync;
    const ordinal = this.tracker.nextOrdinal;
    this.chunkTypes.length = 0;
    this.discardCut = -1;
    this.scanning = chunk;
    const deciding = this.policy?.appliesTo('sql') === true;
    if (this.maskingDeps) this.tracker.masking = this.policy?.masking() != null;
    this.tailLength = this.heldClientTail?.length ?? 0;
    try {
      this.clientScanner.push(chunk);
    } catch (err) {
      this.finish(err instanceof ProtocolError ? { kind: 'client-protocol-error', error: err } : { kind: 'client-protocol-error', error: new ProtocolError((err as Error).message) });
      return;
    }
    this.scanning = null;
    if (this.policyFailure) {
      this.finish({ kind: 'stopped', reason: this.policyFailure });
      return;
    }
    if (deciding || this.heldClientTail) chunk = this.forwardable(chunk, deciding);
    if (this.substitutions.length > 0) chunk = this.substitute(chunk);
    let held = this.heldInChunk;
    this.heldInChunk = null;
    if (wasDiscarding) {
      if (this.discardUntilSync) return; // the whole chunk belongs to the failed segment
      if (this.discardCut === -2) {
        this.finish({ kind: 'recording-failed', error: new Error('cannot resume after an unrecorded segment split across reads') });
        return;
      }
      chunk = chunk.subarray(this.discardCut);
      if (held) held = { ...held, offset: held.offset - this.discardCut };
    }
    if (!wasTerminated && this.tracker.terminated) {
      if (this.tracker.outstanding === 0 && chunk.length >= 5 && chunk.subarray(chunk.length - 5).equals(TERMINATE)) {
        // Nothing owed: keep the upstream session for the pool and end the client session now,
        // as PostgreSQL closes the connection right after Terminate.
        chunk = chunk.subarray(0, chunk.length - 5);
        this.endAfterFlush = true;
      } else {
        // Results still owed: forward Terminate; the target answers what precedes it, then
        // closes, and the session ends then (the backend is not reused).
        this.unpoolable = true;
      }
    }
    let restOrdinal = ordinal;
    if (this.cut) {
      const discarded = wasDiscarding ? this.discardCut : 0;
      const at = Math.max(0, this.cut.offset - discarded);
      this.queueBeforeCut(chunk, discarded, ordinal);
      if (held && held.offset < at) {
        this.holdEntry(this.outgoing[this.outgoing.length - 1]!, held);
        held = null;
      } else if (held) {
        held = { ...held, offset: held.offset - at };
      }
      chunk = chunk.subarray(at);
      restOrdinal = this.cut.ordinal;
      this.cut = null;
    }
    const gate = this.tracker.takeGate(this.recordBeforeForward);
    if (!gate && !held && this.outgoing.length === 0) {
      if (chunk.length > 0) {
        this.writeUpstream(chunk); // common case: nothing to wait for, nothing queued
        this.upstreamAtBoundary = this.atExchangeBoundary();
      }
      if (this.endAfterFlush) this.finish({ kind: 'client-terminated' });
      return;
    }
    const entry: Outgoing = { chunk, gate, types: this.chunkTypes.slice(), ordinal: restOrdinal, boundaryAfter: this.atExchangeBoundary() };
    if (held) this.holdEntry(entry, held);
    this.outgoing.push(entry);
    this.queuedBytes += chunk.length;
    if (!this.waitingForGate) this.flushOutgoing();
    this.updateClientFlow();
  };

  /**
   * The entry waits for its held message's decision too. Approved: forwarded as it is. Otherwise
   * the held message is replaced by a stand-in that fails on the server (denied-statements.ts),
   * with the error that says why: denied by an approver, not decided in time, cancelled.
   */
  private holdEntry(entry: Outgoing, held: HeldMessage): void {
    const durable = entry.gate ?? Promise.resolve();
    entry.gate = Promise.all([durable, held.hold.outcome]).then(([, outcome]) => {
      this.activeHolds.delete(held.hold);
      if (outcome.kind === 'approved') return;
      const marker = newDenialMarker();
      const replacement = held.type === Frontend.Query ? deniedQuery(marker) : deniedParse(held.statementName!, marker);
      entry.chunk = Buffer.concat([entry.chunk.subarray(0, held.offset), replacement, entry.chunk.subarray(held.offset + held.length)]);
      this.queuedBytes += replacement.length - held.length;
      (this.rewriter ??= new DeniedErrorRewriter()).add(marker, heldOutcomeError(held.hold, outcome));
    });
  }

  /** The client cancelled (CancelRequest): held statements are withdrawn and answered as cancelled. */
  cancelHolds(): boolean {
    for (const h of this.activeHolds) h.withdraw('canceled by the client');
    return this.activeHolds.size > 0;
  }

  /** A notice may only go between the server's messages to the client. */
  private sendNotice(notice: Buffer): void {
    if (!this.clientMidMessage && this.heldTail === null) this.client.write(notice);
    else this.pendingNotices.push(notice);
  }

  /**
   * The part of the chunk before a deferred frame goes ahead behind its own gate, followed by a
   * Flush so the server answers it even without a Sync: the deferred frame waits for that answer.
   */
  private queueBeforeCut(chunk: Buffer, discarded: number, ordinal: number): void {
    const cut = this.cut!;
    const offset = Math.max(0, cut.offset - discarded);
    const types = this.chunkTypes.slice(0, cut.typesBefore);
    this.chunkTypes.splice(0, cut.typesBefore);
    const before = Buffer.concat([chunk.subarray(0, offset), FLUSH]);
    this.outgoing.push({ chunk: before, gate: cut.gate, types, ordinal, boundaryAfter: this.atExchangeBoundary(types[types.length - 1]) });
    this.queuedBytes += before.length;
  }

  private flushOutgoing(): void {
    while (this.outgoing.length > 0 && !this.finished) {
      const head = this.outgoing[0];
      if (head.gate) {
        const gate = head.gate;
        head.gate = null;
        this.waitingForGate = true;
        gate.then(this.onGateOpen, this.onGateFailed);
        return;
      }
      this.outgoing.shift();
      this.queuedBytes -= head.chunk.length;
      if (head.chunk.length > 0) {
        this.writeUpstream(head.chunk);
        this.upstreamAtBoundary = head.boundaryAfter;
      }
    }
    if (this.endAfterFlush && this.outgoing.length === 0) {
      this.finish({ kind: 'client-terminated' });
      return;
    }
    this.updateClientFlow();
  }

  private readonly onGateOpen = (): void => {
    this.waitingForGate = false;
    this.flushOutgoing();
  };

  /** Whether the chunk just scanned ended a whole exchange (so what follows starts afresh). */
  private atExchangeBoundary(last: number | undefined = this.chunkTypes[this.chunkTypes.length - 1]): boolean {
    return this.clientScanner.atBoundary && !this.tracker.inCopy
      && (last === undefined ? this.upstreamAtBoundary : last === Frontend.Sync || last === Frontend.Query || last === Frontend.CopyDone || last === Frontend.CopyFail);
  }

  /**
   * Fail closed, but stay connected: the statement whose record failed, and everything queued
   * behind it, is not sent; the client gets the errors PostgreSQL itself would have sent.
   * Only possible when the upstream was left between whole exchanges; otherwise the session
   * ends (still without sending anything unrecorded).
   */
  private readonly onGateFailed = (err: unknown): void => {
    const error = err instanceof Error ? err : new Error(String(err));
    this.waitingForGate = false;
    for (const h of this.activeHolds) h.withdraw('its record could not be made durable');
    const dropped = this.outgoing.splice(0);
    this.queuedBytes = 0;
    const types = dropped.flatMap((d) => d.types);
    if (!this.upstreamAtBoundary || this.tracker.inCopy || dropped.length === 0 || repliesForUnsent(types, 0x49) === null) {
      this.finish({ kind: 'recording-failed', error });
      return;
    }
    this.failedStatements++;
    this.tracker.dropFrom(dropped[0].ordinal, 'recording unavailable');
    this.deferredReplies = { types, ordinal: dropped[0].ordinal };
    this.sendDeferredReplies();
    this.updateClientFlow();
  };

  /** Statements refused because their record could not be made durable. */
  failedStatements = 0;

  private sendDeferredReplies(): void {
    const d = this.deferredReplies;
    if (!d || this.tracker.outstandingBefore(d.ordinal) > 0) return;
    this.deferredReplies = null;
    const answer = repliesForUnsent(d.types, this.tracker.txStatus)!;
    this.client.write(answer.replies);
    if (answer.midSegment) this.discardUntilSync = true;
  }

  private writeUpstream(chunk: Buffer): void {
    if (!this.upstream.write(chunk) && !this.upstreamBlocked) {
      this.upstreamBlocked = true;
      this.upstream.once('drain', this.onUpstreamDrain);
      this.updateClientFlow();
    }
  }

  /**
   * Reading from the client stops while the upstream cannot take more, or while too much is
   * queued behind a pending durable write. Short waits for a commit do not pause the socket:
   * pausing and resuming costs two system calls per statement.
   */
  private updateClientFlow(): void {
    const shouldPause = !this.finished && (this.upstreamBlocked || this.queuedBytes > MAX_QUEUED_BYTES);
    if (shouldPause && !this.clientPaused) {
      this.clientPaused = true;
      this.client.pause();
    } else if (!shouldPause && this.clientPaused && !this.finished) {
      this.clientPaused = false;
      this.client.resume();
    }
  }

  private readonly onUpstreamDrain = (): void => {
    this.upstreamBlocked = false;
    this.updateClientFlow();
  };

  private readonly onClientEnd = (): void => {
    this.finish(this.tracker.terminated ? { kind: 'client-terminated' } : { kind: 'client-closed' });
  };

  private readonly onUpstreamData = (chunk: Buffer): void => {
    if (this.finished) return;
    if (this.rewriter) {
      chunk = this.rewriter.push(chunk);
      if (chunk.length === 0) return;
    }
    if (this.maskingDeps) {
      const plan = this.policy?.masking() ?? null;
      // Masking starts between messages (nothing of a message already sent as the target's bytes).
      if (!this.masker && plan && this.serverScanner.atBoundary && this.heldTail === null) {
        this.masker = new ResultMasker(this.tracker, this.maskingDeps.names, this.onMaskerReady, this.onMaskerError);
      }
      if (this.masker) {
        if (plan !== this.maskPlan) {
          this.maskPlan = plan;
          this.masker.use(plan ? new ValueMasking(plan, this.maskingDeps.key) : null);
        }
        this.onMaskedData(chunk);
        return;
      }
    }
    try {
      this.serverScanner.push(chunk);
    } catch (err) {
      this.finish({ kind: 'upstream-protocol-error', error: err instanceof ProtocolError ? err : new ProtocolError((err as Error).message) });
      return;
    }
    if (!this.writeWholeMessages(chunk)) {
      this.upstream.pause();
      this.client.once('drain', this.onClientDrain);
    }
    if (this.pendingNotices.length > 0 && !this.clientMidMessage) this.client.write(Buffer.concat(this.pendingNotices.splice(0)));
    if (this.deferredReplies) this.sendDeferredReplies();
  };

  /** The masked path: the client gets the frames the masker passed or rewrote, whole. */
  private onMaskedData(chunk: Buffer): void {
    const masker = this.masker!;
    masker.begin(chunk);
    try {
      this.serverScanner.push(chunk);
    } catch (err) {
      masker.take();
      this.finish({ kind: 'upstream-protocol-error', error: err instanceof ProtocolError ? err : new ProtocolError((err as Error).message) });
      return;
    }
    this.writeMasked(masker.take());
    if (masker.waiting) this.upstream.pause();
    if (this.pendingNotices.length > 0) this.client.write(Buffer.concat(this.pendingNotices.splice(0)));
    if (this.deferredReplies) this.sendDeferredReplies();
  }

  private writeMasked(pieces: Buffer[]): void {
    if (pieces.length === 0 || this.finished) return;
    let ok = true;
    if (pieces.length === 1) ok = this.client.write(pieces[0]!);
    else {
      this.client.cork();
      for (const p of pieces) ok = this.client.write(p);
      this.client.uncork();
    }
    if (!ok && !this.clientFull) {
      this.clientFull = true;
      this.upstream.pause();
      this.client.once('drain', this.onClientDrain);
    }
  }

  /** A catalog lookup finished: what waited for it goes to the client, and the target is read again. */
  private readonly onMaskerReady = (): void => {
    if (this.finished || !this.masker) return;
    this.writeMasked(this.masker.take());
    // Answers for unsent statements go after what the target answered before them (the tracker has now seen it).
    if (this.deferredReplies) this.sendDeferredReplies();
    if (!this.masker.waiting && !this.clientFull) this.upstream.resume();
  };

  private readonly onMaskerError = (err: Error): void => {
    this.finish({ kind: 'upstream-protocol-error', error: new ProtocolError(`result masking failed: ${err.message}`) });
  };

  /**
   * The client gets whole messages only: the start of a message that is still incomplete is held
   * back (up to MAX_HELD_TAIL), so if the target goes away mid-message the client can still be
   * sent a clean ErrorResponse. Messages too large to hold are streamed as they come.
   */
  private writeWholeMessages(chunk: Buffer): boolean {
    const partial = this.serverScanner.partialBytes;
    const held = this.heldTail;
    const total = (held?.length ?? 0) + chunk.length;
    if (partial === 0 || partial === -1 || partial > MAX_HELD_TAIL || partial > total) {
      this.heldTail = null;
      this.clientMidMessage = partial !== 0;
      if (held) this.client.write(held);
      return this.client.write(chunk);
    }
    const sendable = total - partial;
    this.clientMidMessage = false;
    if (!held) {
      this.heldTail = Buffer.from(chunk.subarray(sendable)); // a copy: the socket may reuse `chunk`
      return sendable > 0 ? this.client.write(chunk.subarray(0, sendable)) : true;
    }
    if (sendable < held.length) {
      this.heldTail = Buffer.concat([held, chunk]); // one message larger than two reads: rare
      return true;
    }
    this.heldTail = Buffer.from(chunk.subarray(sendable - held.length));
    this.client.write(held);
    return this.client.write(chunk.subarray(0, sendable - held.length));
  }

  private heldTail: Buffer | null = null;
  /** Part of a message was sent to the client (a streamed huge row): no error can follow cleanly. */
  private clientMidMessage = false;

  private readonly onClientDrain = (): void => {
    this.clientFull = false;
    if (!this.finished && !this.masker?.waiting) this.upstream.resume();
  };

  private readonly onUpstreamEnd = (): void => {
    this.finish(this.tracker.terminated ? { kind: 'client-terminated' } : { kind: 'upstream-closed', fatal: this.tracker.lastFatal });
  };
}

/** The error a held statement gets when it is not approved. */
function heldOutcomeError(hold: Hold, outcome: HoldOutcome): ErrorInfo {
  switch (outcome.kind) {
    case 'denied': return { code: SqlState.InsufficientPrivilege, message: `gatehouse: denied by ${outcome.by}: ${outcome.reason}`, detail: `approval request ${hold.id}` };
    case 'expired': return { code: SqlState.QueryCanceled, message: `gatehouse: approval request ${hold.id} was not decided within ${Math.round(outcome.afterMs / 1000)}s; the statement was not run` };
    case 'withdrawn': return { code: SqlState.QueryCanceled, message: 'canceling statement due to user request', detail: `gatehouse: approval request ${hold.id} was withdrawn (${outcome.reason})` };
    case 'failed': return { code: SqlState.CannotConnectNow, message: `gatehouse: ${outcome.reason}, so the statement was not run` };
    default: return { code: SqlState.InternalError, message: 'gatehouse: unexpected approval outcome' };
  }
}
