// Follows one PostgreSQL session's conversation and turns it into recording events: every
// statement (simple Query, extended-protocol Parse and Execute, FunctionCall) with its text and
// bound parameters, and every outcome (command tag, rows, error, duration, a bounded row sample).
//
// Prepared statements and portals are modelled as the server holds them: a Parse, Bind or Close
// takes effect when the server answers it (ParseComplete, BindComplete, CloseComplete), and
// whatever the server skipped after an error never takes effect. An Execute whose statement
// depends on an earlier batch that is not answered yet waits (is deferred) until the answer shows
// what will run, so the record of an Execute always names the text the server runs.
// Pure logic over decoded frames, so it is testable without sockets.
import { Backend, Frontend } from './codec/protocol.ts';
import {
  cStringEnd, decodeBind, decodeCommandComplete, decodeDataRow, decodeErrorFields, decodeExecute, decodeFunctionCall,
  decodeNotification, decodeParameterStatus, decodeParse, decodeRowDescription, decodeTarget, rowsFromTag,
  type BoundValue, type ErrorFields,
} from './codec/decode.ts';
import { ClientEncoding, isAscii } from './codec/client-encoding.ts';
import { mayChangeEncoding, mayChangeNames, nameEffect, tagChangesNames } from './prepared-names.ts';
import { sqlBytes } from './sql-bytes.ts';
import type { SqlChars } from './sql-statement-starts.ts';
import { boundedString, boundedText, DEFAULT_RECORDED_TEXT_BYTES, truncationFields, type BoundedText } from './recorded-text.ts';
import { nowUs } from '../../util/ids.ts';
import type { Verdict } from '../../policy/types.ts';
import type { ColumnDescription } from './codec/decode.ts';

/**
 * The columns of a result as the server described them (RowDescription), with the format each
 * DataRow value comes in: what result masking reads a row by. One object per described result.
 */
export interface ResultShape { columns: readonly ColumnDescription[]; formats: number[] }

/** What result masking masked in one message, for the record: where, by which rule or detector — never the value. */
export interface MaskNote { field: string; rule: string; column?: string; detector?: string; count: number }

/** A COPY TO STDOUT running: its overall format and per-column formats (CopyOutResponse), and the statement's text. */
export interface CopyOutShape {
  format: number;
  columnFormats: readonly number[];
  /** The whole text of the Query or prepared statement (null: not kept). */
  text: string | null;
  /** Which statement of the text runs (those before it have completed). */
  statementIndex: number;
}

/** A shape with the result formats a Bind asked for (0 entries: text, 1: all the same, n: each). */
function withFormats(shape: ResultShape, resultFormats: readonly number[]): ResultShape {
  // One shape per statement and formats: a statement bound again and again is one result shape.
  const key = resultFormats.join(',');
  let bound = boundShapes.get(shape);
  if (!bound) boundShapes.set(shape, bound = new Map());
  let made = bound.get(key);
  if (!made) {
    // (formats are per column here, unlike a Bind's list)
    const n = shape.columns.length;
    const formats = resultFormats.length === 0 ? new Array<number>(n).fill(0)
      : resultFormats.length === 1 ? new Array<number>(n).fill(resultFormats[0]!) : resultFormats.slice(0, n);
    if (bound.size >= 16) bound.clear();
    bound.set(key, made = { columns: shape.columns, formats });
  }
  return made;
}

const boundShapes = new WeakMap<ResultShape, Map<string, ResultShape>>();

/** Where the tracker writes events; implemented by the recorder's SessionRecording. */
export interface EventSink {
  /** Statements: committed before the message carrying them is forwarded. */
  appendDurable(type: string, data: unknown, ts?: number): { seq: number; durable: Promise<void> };
  /** Outcomes and server messages: committed soon, nobody waits. */
  append(type: string, data: unknown, ts?: number): number;
}

export interface TrackerLimits {
  sampleRows: number;
  sampleBytes: number;
  /** Bytes of each bound parameter kept in the record. */
  paramBytes: number;
  /** Bytes of statement text kept in the record; longer text is recorded as prefix, length and SHA-256. */
  textBytes?: number;
}

/** A prepared statement as the server holds it (or will, once its Parse is answered). */
interface PreparedStatement {
  name: string;
  /** As recorded: bounded (see recorded-text.ts). */
  text: string | null;
  /** Original bytes (base64) when the text might not be an exact decoding. */
  raw?: string;
  /** The text is only the first bytes of the statement: its whole length and hash. */
  truncated?: BoundedText['truncated'];
  /** The whole text, kept only when it is truncated and may change names (nameEffect parses it). */
  fullText?: string;
  /** Sequence number of the event that holds its text (a `parse`, or the `query` that PREPAREd it). */
  ref: number;
  /** Running it may create or drop statement or portal names (PREPARE, DECLARE, DO, …). */
  mutates: boolean;
  /** Running it may change client_encoding (SET NAMES, RESET ALL, set_config(), …). */
  changesEncoding?: boolean;
  /** Its result columns, from a Describe of the statement (formats: text until bound). */
  shape?: ResultShape;
  /** Its whole text when it may be a COPY and the session masks results (see masking). */
  copyText?: string;
  columns: string[] | null;
  /** A DO block or procedure ran since this was confirmed and may have redefined the name. */
  unverified?: Unverified;
}

/** Why a name's last known meaning cannot be vouched for. */
interface Unverified { by: number; tag: string }

/** A portal as the server holds it (or will, once its Bind is answered). */
interface Portal {
  name: string;
  statementName: string;
  statement: PreparedStatement | null;
  params: BoundValue[];
  resultFormats: number[];
  columns: string[] | null;
  formats: number[] | null;
  /** Made by SQL DECLARE (a cursor), not by a protocol Bind. */
  cursor?: boolean;
  /** DECLARE … WITH HOLD: survives the end of its transaction. */
  holdable?: boolean;
  /** Its result columns, from a Describe of the portal. */
  shape?: ResultShape;
  unverified?: Unverified;
}

type PendingKind = 'query' | 'execute' | 'call' | 'sync' | 'parse' | 'bind' | 'describe' | 'close';

/** A client message the server has not answered yet, in the order the server will answer. */
interface Pending {
  kind: PendingKind;
  seq: number;
  /** Position among all entries ever queued: lets the relay drop exactly what it did not send. */
  ordinal: number;
  /** Client CopyDone/CopyFail messages seen before this entry was sent (see COPY IN and Sync). */
  copyEndsBefore: number;
  startUs: number;
  tags: string[];
  rows: number;
  columns: string[] | null;
  formats: ArrayLike<number>;
  sample: Array<Array<string | null>>;
  sampleBytes: number;
  truncated: boolean;
  copyBytes: number;
  error: ErrorFields | null;
  /** Answered, failed or skipped: no longer outstanding. */
  done: boolean;
  /** parse: the statement it creates; execute: the statement it runs. */
  statement: PreparedStatement | null;
  /** bind: the portal it creates; execute: the portal it runs; describe: the portal described. */
  portal: Portal | null;
  /** close / describe: 'S' or 'P' and the name. */
  targetKind: number;
  target: string;
  /** query: its text (to learn what a PREPARE in it created; whole only when it may change names). */
  text: string | null;
  /** Counted in `mutators` while outstanding. */
  mutator: boolean;
  /** Counted in `encodingChanges` while outstanding. */
  encodingChange: boolean;
  /** The columns its DataRows carry (query: the latest RowDescription; execute: its portal's). */
  shape: ResultShape | null;
  /** query: its whole text when it may hold a COPY and the session masks results. */
  copyText: string | null;
  /** A COPY TO STDOUT it runs. */
  copyOut: CopyOutShape | null;
  /** What masking masked in its rows, COPY data and error (see maskedFrame). */
  maskNotes: Map<string, MaskNote> | null;
}

/** Client frames held back until an earlier answer shows what they will run (see defer()). */
interface Deferral {
  queue: Array<{ type: number; body: Buffer; verdict?: Verdict }>;
  blocked: () => boolean;
  resolve: (r: { gate: Promise<void> | null }) => void;
  promise: Promise<{ gate: Promise<void> | null }>;
  timer: NodeJS.Timeout | null;
}

const NOT_BLOCKED = (): boolean => false;

/** Longest a statement waits for an earlier answer before it is forwarded, marked provisional. */
const MAX_DEFERRAL_MS = 5_000;

const TEXT_FORMATS: readonly number[] = [0];
/** A statement text that may run a COPY (checked only in sessions that mask results). */
const MAY_COPY = /copy/i;
/** Distinct result descriptions kept per session (statements a client runs again). */
const MAX_SHAPES = 256;
/** Close and Describe name a statement ('S') or a portal ('P'). */
const STATEMENT = 0x53;

export interface TrackerOptions {
  /** Resolves a function OID to its signature (FunctionCall), from the target's catalog. */
  resolveFunction?: (oid: number) => Promise<string | null>;
}

export class StatementTracker {
  private readonly sink: EventSink;
  private readonly limits: TrackerLimits;
  private readonly options: TrackerOptions;
  /** What the server holds, as confirmed by its answers (ParseComplete, BindComplete, …). */
  private readonly confirmedStatements = new Map<string, PreparedStatement>();
  private readonly confirmedPortals = new Map<string, Portal>();
  /** What the server will hold once everything sent so far succeeds (the client's view). */
  private statements = new Map<string, PreparedStatement>();
  private portals = new Map<string, Portal>();
  /** The latest message sent that creates or removes each name. */
  private readonly statementOps = new Map<string, Pending>();
  private readonly portalOps = new Map<string, Pending>();
  private readonly pending: Pending[] = [];
  /** Outstanding messages that may change prepared-statement names in ways only the answer tells. */
  private mutators = 0;
  /** Outstanding messages that may change client_encoding: non-ASCII text behind them waits. */
  private encodingChanges = 0;
  /** Ordinal of the latest Sync, Query or FunctionCall sent: what precedes it is an earlier batch. */
  private lastBoundary = -1;
  private deferral: Deferral | null = null;
  private redeferral: Deferral | null = null;
  private draining = false;
  /** Handling frames whose deferral timed out: their records say they are provisional. */
  private provisional = false;
  private closed = false;
  private readonly functionNames = new Map<number, string | null>();
  /** The session's client encoding: how text in both directions is decoded. */
  readonly encoding: ClientEncoding;
  private readonly textOf: (buf: Buffer, start: number, end: number) => string;
  /** Durability of the most recent statement event: the chunk carrying it waits on this. */
  gate: Promise<void> | null = null;
  /** Set when the frame just given must wait for an earlier answer: the relay cuts the chunk there. */
  deferralStarted = false;
  /** Durability of the statements before the deferred frame (the part of the chunk that may go ahead). */
  gateBeforeDeferral: Promise<void> | null = null;
  /** Transaction status from the last ReadyForQuery: I idle, T in transaction, E failed. */
  txStatus = 0x49;
  /** A client Terminate was seen. */
  terminated = false;
  /** COPY in progress (either direction): the session is not at a reusable boundary. */
  inCopy = false;
  /** Server parameters as last reported (ParameterStatus). */
  readonly parameters: Map<string, string>;
  /** The last FATAL or PANIC error the server sent (why it is about to close). */
  lastFatal: string | null = null;
  /** Client CopyDone + CopyFail messages so far. */
  private copyEnds = 0;
  /** Ordinal the next pending entry gets (see Pending.ordinal). */
  nextOrdinal = 0;
  /** The statement whose COPY FROM STDIN is running, from the server's CopyInResponse. */
  private copyIn: Pending | null = null;

  constructor(sink: EventSink, limits: TrackerLimits, parameters: Map<string, string>, options: TrackerOptions = {}) {
    this.sink = sink;
    this.limits = limits;
    this.parameters = parameters;
    this.options = options;
    this.encoding = new ClientEncoding(parameters.get('client_encoding'));
    this.textOf = (buf, start, end) => this.encoding.text(buf, start, end);
  }

  /** Notes of what masking masked in the frame about to be handled (see maskedFrame). */
  private frameNotes: readonly MaskNote[] | null = null;

  /**
   * The next frame handled was masked so: its notes go with the statement's result (rows, COPY
   * data, its error), or with the notice, notification or error event the frame becomes.
   */
  maskedFrame(notes: readonly MaskNote[]): void {
    this.frameNotes = notes;
  }

  private takeNotes(into: Pending | null): MaskNote[] | null {
    const notes = this.frameNotes;
    if (!notes) return null;
    this.frameNotes = null;
    if (!into) return notes.map((n) => ({ ...n }));
    into.maskNotes ??= new Map();
    for (const n of notes) {
      const k = `${n.field}\u0000${n.rule}\u0000${n.detector ?? ''}`;
      const had = into.maskNotes.get(k);
      if (had) had.count += n.count;
      else into.maskNotes.set(k, { ...n });
    }
    return null;
  }

  /** Result descriptions seen, by their bytes (see RowDescription). */
  private readonly shapes = new Map<string, ResultShape>();

  /** Set by the relay while a mask rule applies: statement texts that may hold a COPY are kept whole. */
  masking = false;

  /** A statement's whole text when it may run a COPY (null otherwise). */
  private copyText(text: BoundedText, buf: Buffer, start: number, end: number): string | null {
    const t = text.truncated ? this.encoding.text(buf, start, end) : text.text;
    return MAY_COPY.test(t) ? t : null;
  }

  /** The columns of the DataRow being handled (null: no result described for it). */
  get rowShape(): ResultShape | null {
    const head = this.head();
    if (!head) return null;
    if (head.shape || head.kind !== 'execute') return head.shape;
    // Described after the Execute was sent (Parse, Bind, Describe portal, Execute in one batch).
    const portal = head.portal;
    const shape = portal?.shape ?? (portal?.statement?.shape ? withFormats(portal.statement.shape, portal.resultFormats) : null);
    if (shape) head.shape = shape;
    return shape;
  }

  /** The COPY TO STDOUT whose CopyData is being handled (null: none). */
  get copyOutShape(): CopyOutShape | null { return this.head()?.copyOut ?? null; }

  /** Outcomes not yet seen (and frames not yet handled); zero means nothing is owed. */
  get outstanding(): number { return this.pending.length + (this.deferral?.queue.length ?? 0); }

  /**
   * What the chunk just scanned must wait for before it is forwarded: the durability of its last
   * statement, or — while frames wait for an earlier answer — the moment they are recorded.
   */
  takeGate(durable: boolean): Promise<void> | null {
    if (this.deferral) return this.deferral.promise.then(durable ? (r) => r.gate ?? undefined : () => undefined);
    const gate = durable ? this.gate : null;
    this.gate = null;
    return gate;
  }

  // ---- client → server -------------------------------------------------------------------

  /** `verdict`: the policy's decision on a Query or Parse (src/policy/), recorded with its event. */
  clientFrame(type: number, buf: Buffer, start: number, end: number, verdict?: Verdict): void {
    if (this.deferral && !this.draining) {
      this.deferral.queue.push({ type, body: Buffer.from(buf.subarray(start, end)), ...(verdict ? { verdict } : {}) });
      if (type === Frontend.Terminate) this.terminated = true;
      return;
    }
    this.handle(type, buf, start, end, verdict);
  }

  /** The verdict of the frame being handled (a deferral keeps it with the frame). */
  private verdict: Verdict | undefined;

  private handle(type: number, buf: Buffer, start: number, end: number, verdict?: Verdict): void {
    this.verdict = verdict;
    switch (type) {
      case Frontend.Query: {
        if (this.mustWaitForEncoding(type, buf, start, end)) return;
        const textEnd = cStringEnd(buf, start, end);
        const text = boundedText(this.encoding, buf, start, textEnd, this.textLimit);
        // The checks below read the whole statement, a long one straight from its bytes.
        const whole = text.truncated ? this.wholeText(buf, start, textEnd) : text.text;
        const p = this.begin('query', 'query', { ...this.textData(text), ...policyField(verdict) });
        p.text = text.text;
        if (this.masking) p.copyText = this.copyText(text, buf, start, textEnd);
        if (mayChangeNames(whole)) {
          p.mutator = true;
          this.mutators++;
          // nameEffect parses it once answered: the whole text, decoded (rare for a long one).
          if (text.truncated) p.text = this.encoding.text(buf, start, textEnd);
        }
        if (mayChangeEncoding(whole)) { p.encodingChange = true; this.encodingChanges++; }
        this.lastBoundary = p.ordinal;
        // The server drops the unnamed statement and portal when it runs a Query.
        this.statements.delete('');
        this.portals.delete('');
        this.statementOps.set('', p);
        this.portalOps.set('', p);
        return;
      }
      case Frontend.Parse: {
        if (this.mustWaitForEncoding(type, buf, start, end)) return;
        const m = decodeParse(buf, start, end, this.textOf);
        const text = boundedText(this.encoding, buf, m.textStart, m.textEnd, this.textLimit);
        const whole = text.truncated ? this.wholeText(buf, m.textStart, m.textEnd) : text.text;
        const data: Record<string, unknown> = this.textData(text);
        if (m.name) data.name = m.name;
        if (m.paramTypes.length > 0) data.paramTypes = m.paramTypes;
        Object.assign(data, policyField(verdict));
        let seq: number;
        if (verdict?.decision === 'deny') {
          // The refusal is the action: on record before the failing stand-in reaches the server.
          const appended = this.sink.appendDurable('parse', data);
          seq = appended.seq;
          this.gate = appended.durable;
        } else {
          seq = this.sink.append('parse', data);
        }
        const statement: PreparedStatement = { name: m.name, text: text.text, ref: seq, mutates: mayChangeNames(whole), columns: null };
        if (this.masking) statement.copyText = this.copyText(text, buf, m.textStart, m.textEnd) ?? undefined;
        if (mayChangeEncoding(whole)) statement.changesEncoding = true;
        if (text.raw) statement.raw = text.raw;
        if (text.truncated) {
          statement.truncated = text.truncated;
          if (statement.mutates) statement.fullText = this.encoding.text(buf, m.textStart, m.textEnd);
        }
        const p = this.push('parse', seq);
        p.statement = statement;
        this.statements.set(m.name, statement);
        this.statementOps.set(m.name, p);
        return;
      }
      case Frontend.Bind: {
        if (this.mustWaitForEncoding(type, buf, start, end)) return;
        const b = decodeBind(buf, start, end, this.limits.paramBytes, this.textOf);
        // Which statement this binds is known only once earlier batches that redefine it are answered.
        const blocked = (): boolean => this.mutators > 0 || this.inEarlierBatch(this.statementOps.get(b.statement));
        if (!this.provisional && blocked()) { this.defer(blocked, type, buf, start, end); return; }
        const portal: Portal = {
          name: b.portal, statementName: b.statement, statement: this.statements.get(b.statement) ?? null,
          params: b.params, resultFormats: b.resultFormats, columns: null, formats: null,
        };
        const p = this.push('bind', -1);
        p.portal = portal;
        this.portals.set(b.portal, portal);
        this.portalOps.set(b.portal, p);
        return;
      }
      case Frontend.Execute: {
        const e = decodeExecute(buf, start, end);
        const blocked = (): boolean => this.mutators > 0 || this.inEarlierBatch(this.portalOps.get(e.portal));
        if (!this.provisional && blocked()) { this.defer(blocked, type, buf, start, end); return; }
        const portal = this.portals.get(e.portal) ?? null;
        const statement = portal?.statement ?? null;
        const data: Record<string, unknown> = { text: statement?.text ?? null, ...truncationFields(statement ?? {}), params: portal?.params ?? [] };
        if (statement?.raw) { data.raw = statement.raw; data.encoding = this.encoding.name; }
        if (portal?.statementName) data.statement = portal.statementName;
        if (portal?.cursor) data.cursor = true;
        if (statement) data.textRef = statement.ref;
        const unverified = portal?.unverified ?? statement?.unverified;
        if (unverified) {
          // A routine ran since the name was last seen defined: what runs now cannot be vouched for.
          data.text = null;
          data.lastKnownText = statement?.text ?? null;
          if (statement?.truncated) data.lastKnownTextTruncated = true;
          delete data.textTruncated;
          data.unverified = `a ${unverified.tag} (event ${unverified.by}) ran since this name was defined and may have redefined it`;
          delete data.raw;
        }
        if (e.portal) data.portal = e.portal;
        if (e.maxRows > 0) data.maxRows = e.maxRows;
        if (this.provisional) data.provisional = true;
        const p = this.begin('execute', 'execute', data);
        p.portal = portal;
        p.statement = statement;
        p.formats = portal?.formats ?? (portal?.resultFormats.length ? portal.resultFormats : TEXT_FORMATS);
        p.shape = portal?.shape ?? (statement?.shape ? withFormats(statement.shape, portal!.resultFormats) : null);
        if (statement?.mutates || unverified) { p.mutator = true; this.mutators++; }
        if (statement?.changesEncoding || unverified) { p.encodingChange = true; this.encodingChanges++; }
        return;
      }
      case Frontend.FunctionCall: {
        const call = decodeFunctionCall(buf, start, end, this.limits.paramBytes, this.textOf);
        if (!this.functionNames.has(call.oid) && this.options.resolveFunction && !this.provisional) {
          let resolved = false;
          this.options.resolveFunction(call.oid).then((name) => name, () => null).then((name) => {
            this.functionNames.set(call.oid, name);
            resolved = true;
            this.drain();
          });
          this.defer(() => !resolved, type, buf, start, end);
          return;
        }
        const data: Record<string, unknown> = { oid: call.oid };
        const name = this.functionNames.get(call.oid);
        if (name) data.function = name;
        data.args = call.args;
        if (call.resultFormat !== 0) data.resultFormat = call.resultFormat;
        const p = this.begin('call', 'function_call', data);
        this.lastBoundary = p.ordinal;
        return;
      }
      case Frontend.Describe: {
        const d = decodeTarget(buf, start, end);
        const p = this.push('describe', -1);
        p.targetKind = d.kind;
        p.target = d.name;
        if (d.kind === STATEMENT) p.statement = this.statements.get(d.name) ?? null;
        else p.portal = this.portals.get(d.name) ?? null;
        return;
      }
      case Frontend.Sync: {
        // During COPY FROM STDIN the server ignores Sync (libpq sends one right after Execute,
        // before it knows the statement is a COPY); it must not be matched to a ReadyForQuery.
        if (this.copyIn && this.copyEnds === this.copyIn.copyEndsBefore) return;
        const p = this.push('sync', -1);
        this.lastBoundary = p.ordinal;
        return;
      }
      case Frontend.Close: {
        const c = decodeTarget(buf, start, end);
        const p = this.push('close', -1);
        p.targetKind = c.kind;
        p.target = c.name;
        if (c.kind === STATEMENT) { this.statements.delete(c.name); this.statementOps.set(c.name, p); }
        else { this.portals.delete(c.name); this.portalOps.set(c.name, p); }
        return;
      }
      case Frontend.CopyData: {
        const head = this.head();
        if (head) this.sampleCopy(head, buf, start, end);
        return;
      }
      case Frontend.CopyDone:
      case Frontend.CopyFail:
        this.copyEnds++;
        this.copyIn = null;
        return;
      case Frontend.Terminate:
        this.terminated = true;
        return;
      default:
        return; // Flush: nothing to record
    }
  }

  private textData(text: BoundedText): Record<string, unknown> {
    const data: Record<string, unknown> = { text: text.text, ...truncationFields(text) };
    if (text.raw) { data.raw = text.raw; data.encoding = this.encoding.name; }
    return data;
  }

  /** A long statement as the lexer reads it: its bytes where the encoding allows, else decoded. */
  private wholeText(buf: Buffer, start: number, end: number): SqlChars {
    return this.encoding.asciiCompatible ? sqlBytes(buf, start, end) : this.encoding.text(buf, start, end);
  }

  private get textLimit(): number { return this.limits.textBytes ?? DEFAULT_RECORDED_TEXT_BYTES; }

  /**
   * Text that is not plain ASCII, sent while an earlier message may still change client_encoding,
   * waits for that answer: only then is it known how the server will read the bytes.
   */
  private mustWaitForEncoding(type: number, buf: Buffer, start: number, end: number): boolean {
    if (this.encodingChanges === 0 || this.provisional || isAscii(buf, start, end)) return false;
    this.defer(() => this.encodingChanges > 0, type, buf, start, end);
    return true;
  }

  /** Whether the latest message touching a name was sent in an earlier batch that is not answered yet. */
  private inEarlierBatch(op: Pending | undefined): boolean {
    return op !== undefined && !op.done && op.ordinal < this.lastBoundary;
  }

  /**
   * This frame (and every later one) waits until `blocked` turns false: an earlier batch may
   * fail or redefine a name, and only the server's answer tells which statement will run. The
   * relay cuts the chunk here and asks the server to answer what precedes (Flush).
   */
  private defer(blocked: () => boolean, type: number, buf: Buffer, start: number, end: number): void {
    let resolve!: Deferral['resolve'];
    const promise = new Promise<{ gate: Promise<void> | null }>((r) => { resolve = r; });
    const d: Deferral = { queue: [{ type, body: Buffer.from(buf.subarray(start, end)), ...(this.verdict ? { verdict: this.verdict } : {}) }], blocked, resolve, promise, timer: null };
    if (this.draining) { this.redeferral = d; return; }
    d.timer = setTimeout(() => this.drain(true), MAX_DEFERRAL_MS).unref();
    this.gateBeforeDeferral = this.gate;
    this.gate = null;
    this.deferral = d;
    this.deferralStarted = true;
  }

  /** Handles deferred frames, in order, as far as their answers allow. */
  private drain(force = false): void {
    const d = this.deferral;
    if (!d || this.draining || this.closed) return;
    this.draining = true;
    try {
      while (d.queue.length > 0) {
        if (!force && d.blocked()) return;
        const f = d.queue.shift()!;
        this.redeferral = null;
        this.provisional = force;
        this.handle(f.type, f.body, 0, f.body.length, f.verdict);
        this.provisional = false;
        const again = this.redeferral as Deferral | null;
        if (again) {
          this.redeferral = null;
          d.queue.unshift(...again.queue);
          d.blocked = again.blocked;
          force = false;
        } else {
          d.blocked = NOT_BLOCKED; // the next frame says itself whether it must wait
        }
      }
      if (d.timer) clearTimeout(d.timer);
      this.deferral = null;
      const gate = this.gate;
      this.gate = null;
      d.resolve({ gate });
    } finally {
      this.draining = false;
      this.provisional = false;
    }
  }

  /** Bytes of a client frame too large to buffer (only CopyData is streamed), as they pass. */
  clientStreamedData(_type: number, bytes: number): void {
    const head = this.head();
    if (head) head.copyBytes += bytes;
  }

  /** Whether a large CopyData from the client may be streamed: only while a COPY can be running. */
  get copyInPossible(): boolean {
    return this.inCopy || this.pending.length > 0;
  }

  private begin(kind: PendingKind, eventType: string, data: Record<string, unknown>): Pending {
    const ts = nowUs();
    const { seq, durable } = this.sink.appendDurable(eventType, data, ts);
    this.gate = durable;
    const p = this.push(kind, seq);
    p.startUs = ts;
    return p;
  }

  private push(kind: PendingKind, seq: number): Pending {
    const p = newPending(kind, seq, this.copyEnds, this.nextOrdinal++);
    this.pending.push(p);
    return p;
  }

  /** COPY data in either direction: counted, and sampled within the same bounds as rows. */
  private sampleCopy(head: Pending, buf: Buffer, start: number, end: number): void {
    head.copyBytes += end - start;
    if (!head.truncated && head.sample.length < this.limits.sampleRows && head.sampleBytes < this.limits.sampleBytes) {
      const take = Math.min(end - start, this.limits.sampleBytes - head.sampleBytes);
      head.sample.push([this.encoding.text(buf, start, start + take)]);
      head.sampleBytes += take;
    } else {
      head.truncated = true;
    }
  }

  // ---- server → client -------------------------------------------------------------------

  serverFrame(type: number, buf: Buffer, start: number, end: number): void {
    this.onServerFrame(type, buf, start, end);
    if (this.deferral && !this.draining) this.drain();
  }

  private onServerFrame(type: number, buf: Buffer, start: number, end: number): void {
    if (this.frameNotes && type !== Backend.NoticeResponse && type !== Backend.NotificationResponse && !(type === Backend.ErrorResponse && !this.head())) this.takeNotes(this.head() ?? null);
    switch (type) {
      case Backend.DataRow: {
        const head = this.head();
        if (!head) return;
        head.rows++;
        if (head.truncated) return;
        if (head.sample.length >= this.limits.sampleRows || head.sampleBytes >= this.limits.sampleBytes) {
          head.truncated = true;
          return;
        }
        const row = decodeDataRow(buf, start, end, head.formats, this.limits.sampleBytes - head.sampleBytes, this.textOf);
        head.sample.push(row.cells);
        head.sampleBytes += row.bytes;
        return;
      }
      case Backend.ParseComplete: {
        const head = this.shiftIf('parse');
        if (head?.statement) this.confirmedStatements.set(head.statement.name, head.statement);
        return;
      }
      case Backend.BindComplete: {
        const head = this.shiftIf('bind');
        if (head?.portal) this.confirmedPortals.set(head.portal.name, head.portal);
        return;
      }
      case Backend.CloseComplete: {
        const head = this.shiftIf('close');
        if (head) (head.targetKind === STATEMENT ? this.confirmedStatements : this.confirmedPortals).delete(head.target);
        return;
      }
      case Backend.NoData:
        this.shiftIf('describe');
        return;
      case Backend.RowDescription: {
        const head = this.head();
        if (!head) return;
        // A statement run again describes its result the same way: one shape for equal descriptions.
        const key = buf.toString('latin1', start, end);
        let shape = this.shapes.get(key);
        if (!shape) {
          const decoded = decodeRowDescription(buf, start, end, this.textOf);
          shape = { columns: decoded, formats: decoded.map((c) => c.format) };
          if (this.shapes.size >= MAX_SHAPES) this.shapes.clear();
          this.shapes.set(key, shape);
        }
        const cols = shape.columns;
        if (head.kind === 'describe') {
          this.shiftIf('describe');
          const names = cols.map((c) => c.name);
          if (head.statement) { head.statement.columns = names; head.statement.shape = shape; }
          if (head.portal) { head.portal.columns = names; head.portal.formats = shape.formats; head.portal.shape = shape; }
          return;
        }
        if (!head.columns) head.columns = cols.map((c) => c.name);
        head.formats = shape.formats;
        head.shape = shape;
        return;
      }
      case Backend.CommandComplete: {
        const head = this.head();
        if (!head) return;
        const tag = decodeCommandComplete(buf, start, end);
        head.tags.push(tag);
        this.inCopy = false;
        if (tagChangesNames(tag)) this.applyNameEffect(head, tag);
        if (head.kind === 'execute') this.complete(head);
        return;
      }
      case Backend.EmptyQueryResponse: {
        const head = this.head();
        if (head?.kind === 'execute') this.complete(head);
        return;
      }
      case Backend.PortalSuspended: {
        const head = this.head();
        if (head?.kind === 'execute') this.complete(head, true);
        return;
      }
      case Backend.ErrorResponse: {
        const error = decodeErrorFields(buf, start, end, this.textOf);
        this.inCopy = false;
        this.copyIn = null;
        if (error.severity === 'FATAL' || error.severity === 'PANIC') this.lastFatal = `${error.code} ${error.message}`;
        const head = this.head();
        if (!head) {
          const notes = this.takeNotes(null);
          this.sink.append('error', notes ? { ...errorData(error), masked: notes } : errorData(error));
          return;
        }
        head.error = error;
        if (head.kind === 'query' || head.kind === 'call') return; // ReadyForQuery follows
        // An extended-protocol message failed: the server skips everything up to the next Sync.
        this.complete(head);
        this.skipToSync();
        return;
      }
      case Backend.ReadyForQuery: {
        this.txStatus = buf[start];
        this.readyForQuery();
        return;
      }
      case Backend.CopyInResponse: {
        this.inCopy = true;
        const head = this.head();
        if (head) this.startCopyIn(head);
        return;
      }
      case Backend.CopyOutResponse: {
        this.inCopy = true;
        const head = this.head();
        if (head && end - start >= 3) {
          const n = buf.readInt16BE(start + 1);
          const columnFormats: number[] = [];
          for (let i = 0; i < n && start + 5 + 2 * i <= end; i++) columnFormats.push(buf.readInt16BE(start + 3 + 2 * i));
          // Which statement of a Query runs: the one after those already complete.
          const text = head.kind === 'query' ? head.copyText : head.statement?.copyText ?? null;
          head.copyOut = { format: buf[start]!, columnFormats, text, statementIndex: head.kind === 'query' ? head.tags.length : 0 };
        }
        return;
      }
      case Backend.CopyBothResponse:
        this.inCopy = true;
        return;
      case Backend.CopyData: {
        const head = this.head();
        if (head) this.sampleCopy(head, buf, start, end);
        return;
      }
      case Backend.NoticeResponse: {
        const notes = this.takeNotes(null);
        const data = errorData(decodeErrorFields(buf, start, end, this.textOf));
        this.sink.append('notice', notes ? { ...data, masked: notes } : data);
        return;
      }
      case Backend.NotificationResponse: {
        const notes = this.takeNotes(null);
        const data = decodeNotification(buf, start, end, this.textOf);
        this.sink.append('notification', notes ? { ...data, masked: notes } : data);
        return;
      }
      case Backend.ParameterStatus: {
        const p = decodeParameterStatus(buf, start, end);
        if (this.parameters.get(p.name) !== p.value) {
          this.parameters.set(p.name, p.value);
          if (p.name === 'client_encoding') { this.encoding.set(p.value); this.shapes.clear(); }
          this.sink.append('parameter', p);
        }
        return;
      }
      default:
        return; // ParameterDescription, FunctionCallResponse, …: nothing to record
    }
  }

  /** A server frame too large to buffer: a huge DataRow or CopyData, counted but not sampled. */
  serverStreamed(type: number, _bodyLength: number): void {
    const head = this.head();
    if (!head) return;
    if (type === Backend.DataRow) head.rows++;
    head.truncated = true;
  }

  serverStreamedData(type: number, bytes: number): void {
    const head = this.head();
    if (head && type === Backend.CopyData) head.copyBytes += bytes;
  }

  /**
   * The server now reads the client's messages as COPY data until CopyDone/CopyFail, ignoring
   * any Sync among them: drop the Sync markers the client sent in that window.
   */
  private startCopyIn(statement: Pending): void {
    const from = this.pending.indexOf(statement);
    for (let i = this.pending.length - 1; i > from; i--) {
      const p = this.pending[i];
      if (p.kind === 'sync' && p.copyEndsBefore === statement.copyEndsBefore) this.pending.splice(i, 1);
    }
    if (this.copyEnds === statement.copyEndsBefore) this.copyIn = statement;
  }

  /** The oldest message still waiting for its answer (skipping Sync markers is not allowed: order matters). */
  private head(): Pending | undefined {
    const p = this.pending[0];
    return p && p.kind !== 'sync' ? p : undefined;
  }

  /** Removes the head when it is of the kind the server just answered. */
  private shiftIf(kind: PendingKind): Pending | undefined {
    const p = this.pending[0];
    if (!p || p.kind !== kind) return undefined;
    this.pending.shift();
    this.markDone(p);
    return p;
  }

  private markDone(p: Pending): void {
    p.done = true;
    if (p.mutator) { p.mutator = false; this.mutators--; }
    if (p.encodingChange) { p.encodingChange = false; this.encodingChanges--; }
  }

  private readyForQuery(): void {
    // Everything up to the first Sync (extended) or the running Query (simple) ends here.
    while (this.pending.length > 0) {
      const p = this.pending.shift()!;
      this.markDone(p);
      if (p.kind === 'sync') break;
      if (p.kind === 'query' || p.kind === 'call') {
        if (p.kind === 'query') this.dropUnnamed();
        this.finish(p, false, false);
        break;
      }
      this.skipped(p);
    }
    if (this.txStatus === 0x49) this.endPortals();
  }

  /** After an extended-protocol error: the server ignores every message up to the next Sync. */
  private skipToSync(): void {
    while (this.pending.length > 0 && this.pending[0].kind !== 'sync') {
      const p = this.pending.shift()!;
      this.markDone(p);
      this.skipped(p);
    }
    this.rebuildExpected();
  }

  private skipped(p: Pending): void {
    if (p.kind === 'execute' || p.kind === 'query' || p.kind === 'call') this.finish(p, false, true);
    else if (p.kind === 'parse') this.sink.append('result', { ref: p.seq, skipped: true, durationUs: 0 });
  }

  /** A simple Query drops the unnamed statement and portal. */
  private dropUnnamed(): void {
    const st = this.confirmedStatements.get('');
    if (st && this.statements.get('') === st) this.statements.delete('');
    this.confirmedStatements.delete('');
    const po = this.confirmedPortals.get('');
    if (po && this.portals.get('') === po) this.portals.delete('');
    this.confirmedPortals.delete('');
  }

  /** Outside a transaction block no portal survives (the transaction that held them ended). */
  private endPortals(): void {
    for (const [name, portal] of this.confirmedPortals) {
      if (portal.holdable) continue;
      if (this.portals.get(name) === portal) this.portals.delete(name);
      this.confirmedPortals.delete(name);
    }
  }

  /** Recomputes the client's view: the confirmed state, then every message still outstanding. */
  private rebuildExpected(): void {
    this.statements = new Map(this.confirmedStatements);
    this.portals = new Map(this.confirmedPortals);
    for (const p of this.pending) {
      if (p.kind === 'parse' && p.statement) this.statements.set(p.statement.name, p.statement);
      else if (p.kind === 'bind' && p.portal) this.portals.set(p.portal.name, p.portal);
      else if (p.kind === 'close') (p.targetKind === STATEMENT ? this.statements : this.portals).delete(p.target);
      else if (p.kind === 'query') { this.statements.delete(''); this.portals.delete(''); }
    }
  }

  /** A statement named by SQL (PREPARE, DECLARE): its text bounded as any other text of record. */
  private statementOf(name: string, text: string, ref: number): PreparedStatement {
    const bounded = boundedString(text, this.textLimit);
    const statement: PreparedStatement = { name, text: bounded.text, ref, mutates: false, columns: null };
    if (bounded.truncated) statement.truncated = bounded.truncated;
    return statement;
  }

  /** A PREPARE, DEALLOCATE, DISCARD ALL, DECLARE, CLOSE, DO or CALL completed: names may have changed. */
  private applyNameEffect(p: Pending, tag: string): void {
    const sql = p.kind === 'query' ? p.text : p.statement?.fullText ?? p.statement?.text ?? null;
    const effect = sql === null ? null : nameEffect(sql, p.kind === 'query' ? p.tags.length - 1 : 0, tag);
    if (!effect) {
      // Which name changed is unknown: forget all, so nothing is recorded with a stale text.
      this.confirmedStatements.clear();
      this.sink.append('tracking', { warning: `could not tell which prepared statement "${tag}" changed; later executions of named statements are recorded without text`, ref: p.seq });
    } else if (effect.kind === 'prepare') {
      // Only SELECT, INSERT, UPDATE, DELETE, MERGE and VALUES can be PREPAREd: running one changes
      // names only through a routine it calls, which the tracker cannot see (docs/recording.md).
      this.confirmedStatements.set(effect.name, this.statementOf(effect.name, effect.text, p.seq));
    } else if (effect.kind === 'deallocate') {
      this.confirmedStatements.delete(effect.name);
    } else if (effect.kind === 'declare-cursor') {
      // A protocol Execute of the cursor's name fetches from it: record the DECLARE as its text.
      const statement = this.statementOf('', effect.text, p.seq);
      this.confirmedPortals.set(effect.name, {
        name: effect.name, statementName: '', statement, params: [], resultFormats: effect.binary ? [1] : [], columns: null, formats: null,
        cursor: true, holdable: effect.holdable,
      });
    } else if (effect.kind === 'close-cursor') {
      this.confirmedPortals.delete(effect.name);
    } else if (effect.kind === 'close-all-cursors') {
      this.confirmedPortals.clear();
    } else if (effect.kind === 'routine') {
      const mark: Unverified = { by: p.seq, tag: effect.tag };
      // Routines reach only named statements and cursors (the unnamed ones are the protocol's own).
      // What their results look like is not known either: result masking waits for a new Describe (else NULLs).
      for (const st of this.confirmedStatements.values()) if (st.name !== '') { st.unverified ??= mark; st.shape = undefined; }
      for (const po of this.confirmedPortals.values()) if (po.name !== '') { po.unverified ??= mark; po.shape = undefined; }
    } else {
      this.confirmedStatements.clear();
      if (effect.kind === 'discard-all') this.confirmedPortals.clear();
    }
    this.rebuildExpected();
  }

  private complete(p: Pending, suspended = false): void {
    const i = this.pending.indexOf(p);
    if (i >= 0) this.pending.splice(i, 1);
    this.markDone(p);
    if (p.kind === 'execute') this.finish(p, suspended, false);
    else if (p.kind === 'parse') this.sink.append('result', { ref: p.seq, durationUs: 0, error: errorData(p.error!) });
    else if (p.error) {
      // Bind, Describe or Close failed: nothing ran, but the reason belongs in the record.
      const data: Record<string, unknown> = { ...errorData(p.error), during: p.kind };
      if (p.kind === 'bind' && p.portal) { data.statement = p.portal.statementName; if (p.portal.name) data.portal = p.portal.name; }
      else data.name = p.target;
      this.sink.append('error', data);
    }
  }

  private finish(p: Pending, suspended: boolean, skipped: boolean): void {
    const data: Record<string, unknown> = { ref: p.seq, durationUs: nowUs() - p.startUs };
    if (skipped && !p.error) {
      data.skipped = true; // an earlier error in the same pipeline made the server skip it
    } else {
      if (p.tags.length === 1) data.tag = p.tags[0];
      else if (p.tags.length > 1) data.tags = p.tags;
      let rows: number | null = null;
      for (const tag of p.tags) {
        const n = rowsFromTag(tag);
        if (n !== null) rows = (rows ?? 0) + n;
      }
      data.rows = rows ?? p.rows;
      if (p.rows > 0) data.rowsReturned = p.rows;
      if (suspended) data.suspended = true;
      if (p.error) data.error = errorData(p.error);
      const columns = p.columns ?? p.portal?.columns ?? p.portal?.statement?.columns ?? null;
      if (columns && (p.rows > 0 || p.columns)) data.columns = columns;
      if (p.sample.length > 0) data.sample = p.sample;
      if (p.truncated) data.sampleTruncated = true;
      if (p.copyBytes > 0) data.copyBytes = p.copyBytes;
      if (p.kind === 'execute') this.checkRan(p, data);
    }
    if (p.maskNotes) data.masked = [...p.maskNotes.values()];
    this.sink.append('result', data);
  }

  /**
   * An execution recorded provisionally (its deferral timed out) may have run another portal
   * than predicted: the server's answers now tell which one, and the outcome says so.
   */
  private checkRan(p: Pending, data: Record<string, unknown>): void {
    const name = p.portal?.name;
    if (name === undefined) return;
    const actual = this.confirmedPortals.get(name);
    if (!actual || actual === p.portal) return;
    const st = actual.statement;
    data.ran = { statement: actual.statementName, text: st?.text ?? null, textRef: st?.ref, params: actual.params };
  }

  /**
   * The relay did not forward anything queued from `ordinal` on (its record could not be made
   * durable): those statements will get no answer from the target. Forget them, and record
   * why, if the store takes it later.
   */
  dropFrom(ordinal: number, reason: string): void {
    this.dropDeferred();
    const i = this.pending.findIndex((p) => p.ordinal >= ordinal);
    if (i < 0) return;
    for (const p of this.pending.splice(i)) {
      this.markDone(p);
      if (p.seq >= 0) this.sink.append('result', { ref: p.seq, notForwarded: reason, durationUs: 0 });
    }
    this.rebuildExpected();
  }

  /** Entries queued before `ordinal` that still wait for the target's answer. */
  outstandingBefore(ordinal: number): number {
    let n = 0;
    for (const p of this.pending) if (p.ordinal < ordinal) n++;
    return n;
  }

  /** Ends the conversation: statements still waiting get an outcome saying why they never got one. */
  abandon(reason: string): void {
    this.closed = true;
    this.dropDeferred();
    for (const p of this.pending) {
      if (p.seq < 0) continue;
      this.sink.append('result', { ref: p.seq, durationUs: nowUs() - p.startUs, incomplete: reason, rowsReturned: p.rows, copyBytes: p.copyBytes || undefined });
    }
    this.pending.length = 0;
  }

  /** Frames still waiting for an earlier answer were never recorded, and are not sent either. */
  private dropDeferred(): void {
    const d = this.deferral;
    if (!d) return;
    if (d.timer) clearTimeout(d.timer);
    this.deferral = null;
    d.queue.length = 0;
  }
}

function newPending(kind: PendingKind, seq: number, copyEndsBefore: number, ordinal: number): Pending {
  return {
    kind, seq, copyEndsBefore, ordinal, startUs: 0, tags: [], rows: 0, columns: null, formats: TEXT_FORMATS, sample: [], sampleBytes: 0,
    truncated: false, copyBytes: 0, error: null, done: false, statement: null, portal: null, targetKind: 0, target: '', text: null,
    mutator: false, encodingChange: false, shape: null, copyText: null, copyOut: null, maskNotes: null,
  };
}

function errorData(e: ErrorFields): Record<string, string> {
  const out: Record<string, string> = { severity: e.severity, code: e.code, message: e.message };
  if (e.detail) out.detail = e.detail;
  if (e.hint) out.hint = e.hint;
  return out;
}

/** What a statement's event says about the policy's decision: nothing when no rule applied. */
function policyField(verdict: Verdict | undefined): Record<string, unknown> {
  if (!verdict || verdict.rule === null && verdict.decision === 'allow') return {};
  return { policy: { decision: verdict.decision, rule: verdict.rule, version: verdict.policyVersion, reason: verdict.reason } };
}
