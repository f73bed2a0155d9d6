// Follows one PostgreSQL session's conversation and turns it into recording events: every
// statement (simple Query, extended-protocol Execute, FunctionCall) with its text and bound
// parameters, and every outcome (command tag, rows, error, duration, a bounded row sample).
// Pure logic over decoded frames, so it is testable without sockets.
import { Backend, Frontend } from './codec/protocol.ts';
import {
  decodeBind, decodeCommandComplete, decodeDataRow, decodeErrorFields, decodeExecute, decodeNotification,
  decodeParameterStatus, decodeParse, decodeQuery, decodeRowDescription, decodeTarget, rowsFromTag,
  type BoundValue, type ErrorFields,
} from './codec/decode.ts';
import { nowUs } from '../../util/ids.ts';

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
}

interface Portal { statementName: string; text: string | null; params: BoundValue[]; resultFormats: number[] }

type PendingKind = 'query' | 'execute' | 'call' | 'sync';

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
}

const TEXT_FORMATS: readonly number[] = [0];

export class StatementTracker {
  private readonly sink: EventSink;
  private readonly limits: TrackerLimits;
  private readonly statements = new Map<string, string>();
  private readonly portals = new Map<string, Portal>();
  private readonly pending: Pending[] = [];
  /** Durability of the most recent statement event: the chunk carrying it waits on this. */
  gate: Promise<void> | null = null;
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

  constructor(sink: EventSink, limits: TrackerLimits, parameters: Map<string, string>) {
    this.sink = sink;
    this.limits = limits;
    this.parameters = parameters;
  }

  /** Outcomes not yet seen; zero means the upstream owes the client nothing. */
  get outstanding(): number { return this.pending.length; }

  // ---- client → server -------------------------------------------------------------------

  clientFrame(type: number, buf: Buffer, start: number, end: number): void {
    switch (type) {
      case Frontend.Query: {
        const text = decodeQuery(buf, start, end);
        this.begin('query', 'query', { text });
        return;
      }
      case Frontend.Parse: {
        const p = decodeParse(buf, start, end);
        this.statements.set(p.name, p.text);
        return;
      }
      case Frontend.Bind: {
        const b = decodeBind(buf, start, end, this.limits.paramBytes);
        this.portals.set(b.portal, {
          statementName: b.statement, text: this.statements.get(b.statement) ?? null, params: b.params, resultFormats: b.resultFormats,
        });
        return;
      }
      case Frontend.Execute: {
        const e = decodeExecute(buf, start, end);
        const portal = this.portals.get(e.portal);
        const data: Record<string, unknown> = { text: portal?.text ?? null, params: portal?.params ?? [] };
        if (portal?.statementName) data.statement = portal.statementName;
        if (e.portal) data.portal = e.portal;
        if (e.maxRows > 0) data.maxRows = e.maxRows;
        const p = this.begin('execute', 'execute', data);
        p.formats = portal?.resultFormats.length ? portal.resultFormats : TEXT_FORMATS;
        return;
      }
      case Frontend.FunctionCall: {
        this.begin('call', 'function_call', { oid: buf.readUInt32BE(start) });
        return;
      }
      case Frontend.Sync:
        // During COPY FROM STDIN the server ignores Sync (libpq sends one right after Execute,
        // before it knows the statement is a COPY); it must not be matched to a ReadyForQuery.
        if (this.copyIn && this.copyEnds === this.copyIn.copyEndsBefore) return;
        this.pending.push(newPending('sync', -1, this.copyEnds, this.nextOrdinal++));
        return;
      case Frontend.Close: {
        const c = decodeTarget(buf, start, end);
        if (c.kind === 0x53) this.statements.delete(c.name);
        else this.portals.delete(c.name);
        return;
      }
      case Frontend.CopyData: {
        const head = this.head();
        if (head) head.copyBytes += end - start;
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
        return; // Describe, Flush: nothing to record
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
    const p = newPending(kind, seq, this.copyEnds, this.nextOrdinal++);
    p.startUs = ts;
    this.pending.push(p);
    return p;
  }

  // ---- server → client -------------------------------------------------------------------

  serverFrame(type: number, buf: Buffer, start: number, end: number): void {
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
        const row = decodeDataRow(buf, start, end, head.formats, this.limits.sampleBytes - head.sampleBytes);
        head.sample.push(row.cells);
        head.sampleBytes += row.bytes;
        return;
      }
      case Backend.RowDescription: {
        const head = this.head();
        if (!head) return;
        const cols = decodeRowDescription(buf, start, end);
        if (!head.columns) head.columns = cols.map((c) => c.name);
        head.formats = cols.map((c) => c.format);
        return;
      }
      case Backend.CommandComplete: {
        const head = this.head();
        if (!head) return;
        head.tags.push(decodeCommandComplete(buf, start, end));
        this.inCopy = false;
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
        const error = decodeErrorFields(buf, start, end);
        this.inCopy = false;
        this.copyIn = null;
        if (error.severity === 'FATAL' || error.severity === 'PANIC') this.lastFatal = `${error.code} ${error.message}`;
        const head = this.head();
        if (!head) {
          this.sink.append('error', errorData(error));
          return;
        }
        head.error = error;
        if (head.kind === 'execute') this.complete(head);
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
      case Backend.CopyOutResponse:
      case Backend.CopyBothResponse:
        this.inCopy = true;
        return;
      case Backend.CopyData: {
        const head = this.head();
        if (!head) return;
        head.copyBytes += end - start;
        if (!head.truncated && head.sample.length < this.limits.sampleRows && head.sampleBytes < this.limits.sampleBytes) {
          const take = Math.min(end - start, this.limits.sampleBytes - head.sampleBytes);
          head.sample.push([buf.toString('utf8', start, start + take)]);
          head.sampleBytes += take;
        } else {
          head.truncated = true;
        }
        return;
      }
      case Backend.NoticeResponse:
        this.sink.append('notice', errorData(decodeErrorFields(buf, start, end)));
        return;
      case Backend.NotificationResponse:
        this.sink.append('notification', decodeNotification(buf, start, end));
        return;
      case Backend.ParameterStatus: {
        const p = decodeParameterStatus(buf, start, end);
        if (this.parameters.get(p.name) !== p.value) {
          this.parameters.set(p.name, p.value);
          this.sink.append('parameter', p);
        }
        return;
      }
      default:
        return;
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

  /** The oldest statement still waiting for its outcome (skipping Sync markers is not allowed: order matters). */
  private head(): Pending | undefined {
    const p = this.pending[0];
    return p && p.kind !== 'sync' ? p : undefined;
  }

  private readyForQuery(): void {
    // Everything up to the first Sync (extended) or the running Query (simple) ends here.
    while (this.pending.length > 0) {
      const p = this.pending.shift()!;
      if (p.kind === 'sync') return;
      if (p.kind === 'execute') this.finish(p, false, true);
      else { this.finish(p, false, false); return; }
    }
  }

  private complete(p: Pending, suspended = false): void {
    const i = this.pending.indexOf(p);
    if (i >= 0) this.pending.splice(i, 1);
    this.finish(p, suspended, false);
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
      if (p.columns) data.columns = p.columns;
      if (p.sample.length > 0) data.sample = p.sample;
      if (p.truncated) data.sampleTruncated = true;
      if (p.copyBytes > 0) data.copyBytes = p.copyBytes;
    }
    this.sink.append('result', data);
  }

  /**
   * The relay did not forward anything queued from `ordinal` on (its record could not be made
   * durable): those statements will get no answer from the target. Forget them, and record
   * why, if the store takes it later.
   */
  dropFrom(ordinal: number, reason: string): void {
    const i = this.pending.findIndex((p) => p.ordinal >= ordinal);
    if (i < 0) return;
    for (const p of this.pending.splice(i)) {
      if (p.kind !== 'sync') this.sink.append('result', { ref: p.seq, notForwarded: reason, durationUs: 0 });
    }
  }

  /** Entries queued before `ordinal` that still wait for the target's answer. */
  outstandingBefore(ordinal: number): number {
    let n = 0;
    for (const p of this.pending) if (p.ordinal < ordinal) n++;
    return n;
  }

  /** Ends the conversation: statements still waiting get an outcome saying why they never got one. */
  abandon(reason: string): void {
    for (const p of this.pending) {
      if (p.kind === 'sync') continue;
      this.sink.append('result', { ref: p.seq, durationUs: nowUs() - p.startUs, incomplete: reason, rowsReturned: p.rows, copyBytes: p.copyBytes || undefined });
    }
    this.pending.length = 0;
  }
}

function newPending(kind: PendingKind, seq: number, copyEndsBefore: number, ordinal: number): Pending {
  return {
    kind, seq, copyEndsBefore, ordinal, startUs: 0, tags: [], rows: 0, columns: null, formats: TEXT_FORMATS, sample: [], sampleBytes: 0,
    truncated: false, copyBytes: 0, error: null,
  };
}

function errorData(e: ErrorFields): Record<string, string> {
  const out: Record<string, string> = { severity: e.severity, code: e.code, message: e.message };
  if (e.detail) out.detail = e.detail;
  if (e.hint) out.hint = e.hint;
  return out;
}
