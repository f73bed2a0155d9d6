// Result masking for one PostgreSQL session, on the server → client path: each DataRow value of a
// column a mask rule names is replaced in the rule's style, values in which a detector finds a
// secret have it masked, COPY … TO STDOUT data is masked by column the same way, and every
// rewritten message gets its lengths fixed. The relay takes this path only in sessions a mask rule
// applies to; others keep its zero-copy relay.
//
// A result column is named by where it comes from — RowDescription's table OID and attribute
// number, looked up in the target's catalog on the gateway's own connection and cached — so an
// alias (`select email as x`) does not change it. An expression column (table OID 0) is named by
// its output name. While a lookup runs, the frames after it wait, in order (the relay pauses the
// target); a lookup that fails masks every column read from a table (fail closed).
import { Backend } from '../codec/protocol.ts';
import type { ClientEncoding } from '../codec/client-encoding.ts';
import type { CopyOutShape, MaskNote, ResultShape, StatementTracker } from '../statement-tracker.ts';
import type { ColumnName, TypeInfo } from '../upstream/catalog.ts';
import type { MaskChoice } from '../../../policy/policy.ts';
import type { Masked, ValueMasking } from '../../../policy/mask-detectors.ts';
import { maskBinaryCopy, maskCsvRow, maskTextRow, readCopyStatement, type CopyStatement } from './copy-format.ts';

/** Where the masker learns a column's catalog name (the target's catalog, on the gateway's own connection). */
export interface ColumnNameSource {
  /** Cached: the name, null (no such column), or undefined (look it up). */
  peek(tableOid: number, attnum: number): ColumnName | null | undefined;
  resolve(keys: ReadonlyArray<readonly [number, number]>): Promise<void>;
  /** The columns a COPY of this relation sends, in order; null when it cannot be found. */
  relation(schema: string | null, relation: string, columns: readonly string[] | null): Promise<ColumnName[] | null>;
  /** Cached: what a type defined in the database is (undefined: look it up). */
  peekType(typeOid: number): TypeInfo | undefined;
  resolveTypes(oids: readonly number[]): Promise<void>;
  /** DDL ran: names may have changed. */
  forget(): void;
}

/** How long a row plan (the names it was made with) is trusted: as long as the catalog cache's names. */
const NAMES_TTL_MS = 10_000;

/** Types below this OID are built in (FirstNormalObjectId): none is a table's row type or a domain. */
const FIRST_USER_OID = 16384;

/** Types whose values are text in both formats (binary: the text's bytes; jsonb: a version byte, then the text). */
const TEXT_LIKE = new Set([25, 1043, 1042, 19, 114, 3802, 705, 142]);
const JSON = 114;
/** Columns of the statistics views that hold sampled values (most common values, histogram bounds). */
const STATS_VALUES = /^(?:pg_stats\.(?:most_common_vals|most_common_elems|histogram_bounds)|pg_stats_ext\.most_common_vals|pg_stats_ext_exprs\.(?:most_common_vals|most_common_elems|histogram_bounds)|pg_statistic\.stavalues[1-5])$/;
const BYTEA = 17;
const JSONB = 3802;
/** Types no detector finds anything in (numbers, booleans, dates and times, uuid…): not decoded. */
const NOT_TEXT = new Set([16, 20, 21, 23, 26, 700, 701, 1700, 1082, 1083, 1114, 1184, 1186, 1266, 2950, 790, 869, 650, 829, 774, 28, 1560, 1562]);

interface ColumnAction {
  /** Masked whole by this rule (null: not a masked column). */
  choice: MaskChoice | null;
  label: string;
  /** Its values are text (text format, or a text-like type in binary): detectors can read them. */
  text: boolean;
  /**
   * A value in binary format of a type that is not text-like and may hold text (an array, a
   * record, bytea, a type of an extension): the detectors read its bytes as they are (text
   * elements are in them verbatim), and a value they find a secret in is sent as NULL — a span
   * cannot be rewritten inside a binary structure.
   */
  opaque?: boolean;
  /** A bytea in text format (\x and hex digits): the detectors read its bytes; one holding a secret is NULL. */
  byteaHex?: boolean;
  /** A text-like type: a masked value can take a text in its place (other types are sent as NULL). */
  textLike: boolean;
  json: boolean;
  /** Binary jsonb: one version byte before the text. */
  jsonbBinary: boolean;
  /** Detectors run on its values. */
  detect: boolean;
  /** The replacement when it does not depend on the value (redact): encoded once per plan. */
  fixed?: Buffer;
}

interface RowPlan {
  masking: ValueMasking;
  /** When it was made (the masker's clock) and the name generation it was made in. */
  at: number;
  generation: number;
  columns: ColumnAction[];
  /** Some column is masked whole. */
  masksColumns: boolean;
  /** Detectors run on some column. */
  detects: boolean;
  /** Some column is a bytea in text format: hex, which a chunk's prefilter cannot clear. */
  readsHex?: boolean;
}

interface CopyPlan {
  masking: ValueMasking;
  statement: CopyStatement;
  /** Per column: masked whole by this rule, or not. */
  choices: Array<MaskChoice | null>;
  labels: string[];
  detect: boolean;
  masksColumns: boolean;
  /** Messages of this COPY seen (the first carries a header line or the binary file header). */
  seen: number;
}

/** A frame waiting behind a lookup (the tracker sees it once it is sent). */
interface Queued { type: number; body: Buffer }

const EMPTY_ROW_CELLS: Array<Buffer | null | undefined> = [];

export class ResultMasker {
  private readonly tracker: StatementTracker;
  private readonly names: ColumnNameSource;
  private readonly onReady: () => void;
  private readonly onError: (err: Error) => void;
  private masking: ValueMasking | null = null;
  private readonly rowPlans = new WeakMap<ResultShape, RowPlan>();
  private readonly copyPlans = new WeakMap<CopyOutShape, CopyPlan | Promise<void>>();
  /** Column lookups that failed (and when): for NAMES_TTL_MS their rows are masked as if every table column were named, then asked again. */
  private readonly unresolvable = new WeakMap<ResultShape, number>();
  private readonly out: Buffer[] = [];
  private chunk: Buffer | null = null;
  private spanStart = -1;
  private spanEnd = -1;
  private queue: Queued[] = [];
  private waitingFor: Promise<void> | null = null;
  /** Replacement cells of the row being rewritten (reused). */
  private cells: Array<Buffer | null | undefined> = EMPTY_ROW_CELLS;
  /** What the frame being processed had masked (for the record; reused). */
  private readonly notes: MaskNote[] = [];
  private readonly found: Array<{ detector: string; rule: string }> = [];

  private note(field: string, rule: string, column?: string, detector?: string): void {
    for (const n of this.notes) {
      if (n.field === field && n.rule === rule && n.detector === detector) { n.count++; return; }
    }
    const n: MaskNote = { field, rule, count: 1 };
    if (column !== undefined) n.column = column;
    if (detector !== undefined) n.detector = detector;
    this.notes.push(n);
  }

  /** The detectors' findings of the last secrets() call, noted under `field`. */
  private noteFound(field: string, column?: string): void {
    for (const f of this.found) this.note(field, f.rule, column, f.detector);
    this.found.length = 0;
  }

  constructor(tracker: StatementTracker, names: ColumnNameSource, onReady: () => void, onError: (err: Error) => void) {
    this.tracker = tracker;
    this.names = names;
    this.onReady = onReady;
    this.onError = onError;
  }

  /** The session's masking as the policy in force says (null: no mask rule applies any more). */
  use(masking: ValueMasking | null): void {
    this.masking = masking;
  }

  /** Frames wait for a catalog lookup: the relay keeps the target paused. */
  get waiting(): boolean { return this.waitingFor !== null; }

  private get encoding(): ClientEncoding { return this.tracker.encoding; }

  /** Milliseconds, read once per chunk: a row plan is remade after NAMES_TTL_MS, as names may change. */
  private clock = Date.now();
  /** Bumped when DDL ran: every row plan is remade. */
  private generation = 0;

  begin(chunk: Buffer): void {
    this.clock = Date.now();
    this.chunk = chunk;
    this.spanStart = this.spanEnd = -1;
    this.chunkMayHold = null;
  }

  /** Whether the detectors could find anything in this chunk (asked once per chunk, lazily). */
  private chunkMayHold: boolean | null = null;

  /** Whether detectors could find anything in the frame buf[start, end) (for a frame of the chunk: in the chunk). */
  private mayHold(buf: Buffer, start: number, end: number, masking: ValueMasking): boolean {
    if (!masking.detecting) return false;
    if (buf === this.chunk) return this.chunkMayHold ??= masking.mayHold(buf.toString('latin1'));
    return masking.mayHold(buf.toString('latin1', start, end));
  }

  /** What may be written to the client now, in order (the chunk's pieces, or what a finished lookup released). */
  take(): Buffer[] {
    this.flushSpan();
    this.chunk = null;
    return this.out.splice(0);
  }

  /**
   * A whole server frame, its body buf[start, end). The tracker is fed here, in order, with what
   * the client gets (so the recording holds masked values); while a lookup runs, frames wait.
   */
  frame(type: number, buf: Buffer, start: number, end: number): void {
    if (this.waitingFor) {
      this.queue.push({ type, body: Buffer.from(buf.subarray(start, end)) });
      return;
    }
    this.notes.length = 0;
    const replaced = this.process(type, buf, start, end);
    if (replaced === 'wait') {
      this.queue.push({ type, body: Buffer.from(buf.subarray(start, end)) });
      return;
    }
    if (replaced) {
      if (this.notes.length > 0) this.tracker.maskedFrame(this.notes);
      this.tracker.serverFrame(type, replaced, 5, replaced.length);
      this.flushSpan();
      this.out.push(replaced);
      return;
    }
    this.tracker.serverFrame(type, buf, start, end);
    if (buf === this.chunk) this.pass(start - 5, end);
    else { this.flushSpan(); this.out.push(header(type, end - start), buf.subarray(start, end)); }
  }

  private pass(from: number, to: number): void {
    if (this.spanEnd === from) { this.spanEnd = to; return; }
    this.flushSpan();
    this.spanStart = from;
    this.spanEnd = to;
  }

  private flushSpan(): void {
    if (this.spanStart >= 0 && this.chunk) this.out.push(this.chunk.subarray(this.spanStart, this.spanEnd));
    this.spanStart = this.spanEnd = -1;
  }

  /** The frame rewritten, null when it goes as it is, 'wait' when a lookup must finish first. */
  private process(type: number, buf: Buffer, start: number, end: number): Buffer | null | 'wait' {
    const masking = this.masking;
    if (!masking) return null;
    switch (type) {
      case Backend.DataRow: {
        const shape = this.tracker.rowShape;
        if (!shape) return masking.plan.masksColumns ? this.maskUnknownRow(buf, start, end, masking) : this.mayHold(buf, start, end, masking) ? this.maskRow(buf, start, end, this.detectOnlyPlan(buf, start, masking), true) : null;
        // A row that does not fit its description (a statement redefined unseen) is not read by it.
        if (buf.readInt16BE(start) !== shape.columns.length && masking.plan.masksColumns) return this.maskUnknownRow(buf, start, end, masking);
        const plan = this.rowPlan(shape, masking);
        if (plan === 'wait') return 'wait';
        const detect = plan.detects && (plan.readsHex === true || this.mayHold(buf, start, end, masking));
        return plan.masksColumns || detect ? this.maskRow(buf, start, end, plan, detect) : null;
      }
      case Backend.CopyData: {
        const copy = this.tracker.copyOutShape;
        if (!copy) return null;
        const plan = this.copyPlan(copy, masking);
        if (plan === 'wait') return 'wait';
        // (A bytea field is hex, \x…, which the prefilter cannot clear: its bytes are read.)
        return this.maskCopy(buf, start, end, plan, plan.detect && (this.mayHold(buf, start, end, masking) || hasHex(buf, start, end)));
      }
      case Backend.CommandComplete: {
        // A rename or a new table: names read before may be stale (ALTER …, DROP …, CREATE …; not COMMIT, DELETE, COPY).
        const c = buf[start];
        if ((c === 0x41 || c === 0x44 || c === 0x43) && DDL_TAG.test(buf.toString('latin1', start, Math.min(end, start + 7)))) {
          this.names.forget();
          this.generation++;
        }
        return null;
      }
      case Backend.NoticeResponse:
      case Backend.ErrorResponse:
        return this.maskNotice(type, buf, start, end, masking);
      case Backend.NotificationResponse:
        return this.maskNotification(buf, start, end, masking);
      case Backend.ParameterStatus:
        return this.maskParameterStatus(buf, start, end, masking);
      case Backend.RowDescription:
        return this.maskColumnNames(buf, start, end, masking);
      default:
        return null;
    }
  }

  // ---- notices, errors, notifications ----

  /**
   * PostgreSQL echoes values in errors and notices: `Key (email)=(alice@example.com) already
   * exists`, `Failing row contains (…)`. A key whose columns a rule masks has its values masked; a
   * failing row is masked whole whenever column rules apply (its columns are not named); then the
   * detectors run on every text field.
   */
  private maskNotice(type: number, buf: Buffer, start: number, end: number, masking: ValueMasking): Buffer | null {
    const fields: Array<[number, string]> = [];
    let pos = start;
    while (pos < end && buf[pos] !== 0) {
      const t = buf[pos]!;
      let z = buf.indexOf(0, pos + 1);
      if (z < 0 || z > end) z = end;
      fields.push([t, this.encoding.text(buf, pos + 1, z)]);
      pos = z + 1;
    }
    const schema = fields.find((f) => f[0] === 0x73)?.[1] ?? null; // s
    const table = fields.find((f) => f[0] === 0x74)?.[1] ?? null; // t
    // An error raised while the statement ran (no position in the statement's text) may quote a
    // value it read — select email::int gives invalid input syntax for type integer: "alice@…", a
    // regclass cast relation "…" does not exist — and the gateway cannot tell a value from a name
    // there: what it quotes is masked. Errors from parsing quote the client's own text and keep it.
    const code = fields.find((f) => f[0] === 0x43)?.[1] ?? '';
    // Data exceptions (22…) and run-time name lookups (42…, 3F000: casts to regclass, regtype…)
    // quote values; the other classes quote names (a constraint, a relation) and keep them.
    const runtime = masking.plan.masksColumns && /^(?:22|42|3F)/.test(code) && !fields.some((f) => f[0] === 0x50 || f[0] === 0x70);
    let changed = false;
    for (const f of fields) {
      const t = f[0];
      if (t === 0x53 || t === 0x56 || t === 0x43 || t === 0x46 || t === 0x4c || t === 0x52 || t === 0x50 || t === 0x70) continue; // S V C F L R P p
      let text = f[1];
      const field = NOTICE_FIELDS[t] ?? `field_${String.fromCharCode(t)}`;
      if (t === 0x44 && masking.plan.masksColumns) {
        const masked = this.maskDetail(text, schema, table, masking);
        if (masked.text !== text) { text = masked.text; this.note(field, masked.rule!); }
      }
      if (runtime && (t === 0x4d || t === 0x44 || t === 0x57 || t === 0x48)) {
        const masked = this.maskQuoted(text, code.startsWith('22'), masking);
        if (masked !== text) { text = masked; this.note(field, masking.plan.firstColumnRule!.rule); }
      }
      this.found.length = 0;
      const found = masking.secrets(text, this.found);
      if (found !== undefined) { text = found ?? '[masked]'; this.noteFound(field); }
      if (text !== f[1]) { f[1] = text; changed = true; }
    }
    if (!changed) return null;
    const pieces: Buffer[] = [];
    for (const [t, v] of fields) pieces.push(Buffer.from([t]), this.encodeText(v.replace(/\0/g, '')), ZERO);
    pieces.push(ZERO);
    const body = Buffer.concat(pieces);
    return Buffer.concat([header(type, body.length), body]);
  }

  /**
   * What an error quotes ("…"), masked as the first column rule masks; for a data exception (class
   * 22) also what follows "…: " when nothing is quoted (JSON's "line 1: …" context, token lists).
   */
  private maskQuoted(text: string, dataException: boolean, masking: ValueMasking): string {
    const choice = masking.plan.firstColumnRule!;
    const mask = (v: string): string => (v.startsWith('[masked') || v.startsWith('[hash') ? v : choice.style === 'null' ? 'NULL' : masking.column(v, choice, 'value') ?? 'NULL');
    let out = text.replace(/"((?:[^"]|"")*)"/g, (_m, v: string) => `"${mask(v)}"`);
    if (dataException && out === text) {
      const at = text.indexOf(': ');
      if (at >= 0 && at + 2 < text.length) out = text.slice(0, at + 2) + mask(text.slice(at + 2));
    }
    if (dataException) {
      // JSON's detail: Token "…" is invalid. — and the context: JSON data, line 1: …
      out = out.replace(/^(JSON data, line \d+: )(.*)$/s, (_m, p: string, v: string) => p + mask(v));
    }
    return out;
  }

  private maskDetail(detail: string, schema: string | null, table: string | null, masking: ValueMasking): { text: string; rule?: string } {
    const plan = masking.plan;
    if (detail.startsWith('Failing row contains (')) {
      const choice = plan.firstColumnRule!;
      return { text: `Failing row contains (${choice.style === 'null' ? 'NULL' : masking.column(detail, choice, 'row')}).`, rule: choice.rule };
    }
    const key = /^Key \((.+?)\)=\(/s.exec(detail);
    if (!key) return { text: detail };
    const close = detail.lastIndexOf(')');
    if (close < key[0].length) return { text: detail };
    const columns = key[1]!.split(',').map((c) => c.trim().replace(/^"(.*)"$/s, '$1'));
    const choice = columns.map((c) => (schema !== null && table !== null ? plan.column(schema, table, c) : plan.outputName(c))).find((c) => c !== null);
    if (!choice) return { text: detail };
    const values = detail.slice(key[0].length, close);
    const masked = choice.style === 'null' ? 'NULL' : masking.column(values, choice, columns.join(','));
    return { text: detail.slice(0, key[0].length) + masked + detail.slice(close), rule: choice.rule };
  }

  /** NOTIFY payloads through the detectors (a channel name is the application's, not data). */
  private maskNotification(buf: Buffer, start: number, end: number, masking: ValueMasking): Buffer | null {
    if (!masking.detecting) return null;
    const channelEnd = buf.indexOf(0, start + 4);
    if (channelEnd < 0 || channelEnd >= end) return null;
    let payloadEnd = buf.indexOf(0, channelEnd + 1);
    if (payloadEnd < 0 || payloadEnd > end) payloadEnd = end;
    this.found.length = 0;
    const found = masking.secrets(this.encoding.text(buf, channelEnd + 1, payloadEnd), this.found);
    if (found === undefined) return null;
    this.noteFound('payload');
    const body = Buffer.concat([buf.subarray(start, channelEnd + 1), this.encodeText((found ?? '[masked]').replace(/\0/g, '')), ZERO]);
    return Buffer.concat([header(Backend.NotificationResponse, body.length), body]);
  }

  /**
   * A reported setting's value through the detectors: select set_config('application_name', note,
   * false) reports up to 63 bytes of any value the statement computes.
   */
  private maskParameterStatus(buf: Buffer, start: number, end: number, masking: ValueMasking): Buffer | null {
    if (!this.mayHold(buf, start, end, masking)) return null;
    const nameEnd = buf.indexOf(0, start);
    if (nameEnd < 0 || nameEnd >= end) return null;
    let valueEnd = buf.indexOf(0, nameEnd + 1);
    if (valueEnd < 0 || valueEnd > end) valueEnd = end;
    this.found.length = 0;
    const found = masking.secrets(this.encoding.text(buf, nameEnd + 1, valueEnd), this.found);
    if (found === undefined) return null;
    this.noteFound('parameter');
    const body = Buffer.concat([buf.subarray(start, nameEnd + 1), this.encodeText((found ?? '[masked]').replace(/\0/g, '')), ZERO]);
    return Buffer.concat([header(Backend.ParameterStatus, body.length), body]);
  }

  /** Column names through the detectors: dynamic SQL can name a column after a value (format('select 1 as %I', …)). */
  private maskColumnNames(buf: Buffer, start: number, end: number, masking: ValueMasking): Buffer | null {
    if (!this.mayHold(buf, start, end, masking)) return null;
    const n = buf.readInt16BE(start);
    const pieces: Buffer[] = [buf.subarray(start, start + 2)];
    let pos = start + 2;
    let changed = false;
    for (let i = 0; i < n; i++) {
      const z = buf.indexOf(0, pos);
      if (z < 0 || z + 19 > end) return null; // malformed: the tracker says so
      this.found.length = 0;
      const found = masking.secrets(this.encoding.text(buf, pos, z), this.found);
      if (found !== undefined) {
        changed = true;
        this.noteFound(`columns[${i}]`);
        pieces.push(this.encodeText((found ?? '[masked]').replace(/\0/g, '')));
      } else {
        pieces.push(buf.subarray(pos, z));
      }
      pieces.push(buf.subarray(z, z + 19)); // NUL, table OID, attnum, type OID, size, modifier, format
      pos = z + 19;
    }
    if (!changed) return null;
    const body = Buffer.concat(pieces);
    return Buffer.concat([header(Backend.RowDescription, body.length), body]);
  }

  // ---- DataRow ----

  private rowPlan(shape: ResultShape, masking: ValueMasking): RowPlan | 'wait' {
    const known = this.rowPlans.get(shape);
    if (known && known.masking === masking && known.generation === this.generation && this.clock - known.at < NAMES_TTL_MS) return known;
    const plan = masking.plan;
    const names: Array<ColumnName | null> = [];
    const types: Array<TypeInfo | null> = [];
    const failedAt = this.unresolvable.get(shape);
    const failed = failedAt !== undefined && this.clock - failedAt < NAMES_TTL_MS;
    if (plan.masksColumns && !failed) {
      const missing: Array<[number, number]> = [];
      const missingTypes: number[] = [];
      for (const c of shape.columns) {
        let type: TypeInfo | null = null;
        if (c.typeOid >= FIRST_USER_OID) {
          const t = this.names.peekType(c.typeOid);
          if (t === undefined) missingTypes.push(c.typeOid);
          type = t ?? null;
        }
        types.push(type);
        if (c.tableOid === 0) { names.push(null); continue; }
        const n = this.names.peek(c.tableOid, c.attnum);
        if (n === undefined) missing.push([c.tableOid, c.attnum]);
        names.push(n ?? null);
      }
      if (missing.length > 0 || missingTypes.length > 0) {
        this.wait(Promise.all([this.names.resolve(missing), this.names.resolveTypes(missingTypes)]).then(() => undefined, () => { this.unresolvable.set(shape, Date.now()); }));
        return 'wait';
      }
    }
    const firstColumnRule = failed ? this.anyColumnChoice(masking) : null;
    const columns = shape.columns.map((c, i): ColumnAction => {
      const binary = shape.formats[i] === 1;
      const type = types[i] ?? null;
      // A value holding a whole row of a table (select u from users u) is not text: masked, it is NULL.
      const textLike = TEXT_LIKE.has(c.typeOid) || (type !== null && type.textual && type.rowOf.length === 0 && !binary);
      let choice: MaskChoice | null = null;
      let label = c.name;
      if (plan.masksColumns) {
        const n = names[i];
        if (failed && (c.tableOid !== 0 || c.typeOid >= FIRST_USER_OID)) choice = firstColumnRule;
        else if (n) {
          // A view's column is masked by its own name or by the table column it shows.
          for (let o: ColumnName | undefined = n; o && !choice; o = o.origin) choice = plan.column(o.schema, o.table, o.column);
          // The planner's statistics hold sample values of every analysed column (pg_stats shows a
          // column's to whoever may read it): which column a row describes is data, not a name,
          // so while column rules apply these values are masked for every table.
          for (let o: ColumnName | undefined = n; o && !choice; o = o.origin) {
            if (o.schema === 'pg_catalog' && STATS_VALUES.test(`${o.table}.${o.column}`)) choice = plan.firstColumnRule;
          }
          label = n.column;
        }
        else choice = plan.outputName(c.name);
        if (!choice && type && type.rowOf.length > 0) {
          for (const r of type.rowOf) if ((choice = plan.column(r.schema, r.table, r.column))) break;
        }
      }
      const action: ColumnAction = {
        choice, label, text: !binary || textLike, textLike, json: c.typeOid === JSON || c.typeOid === JSONB, jsonbBinary: binary && c.typeOid === JSONB,
        // A column masked whole needs no detector.
        detect: choice === null && masking.detecting && !NOT_TEXT.has(c.typeOid),
      };
      if (binary && !textLike && !NOT_TEXT.has(c.typeOid)) action.opaque = true;
      if (!binary && c.typeOid === BYTEA && action.detect) action.byteaHex = true;
      if (choice?.style === 'redact' && textLike) action.fixed = this.encodeCell(masking.column('', choice, label), action, true) ?? undefined;
      return action;
    });
    const made: RowPlan = { masking, at: this.clock, generation: this.generation, columns, masksColumns: columns.some((c) => c.choice !== null), detects: columns.some((c) => c.detect) };
    if (columns.some((c) => c.byteaHex)) made.readsHex = true;
    this.rowPlans.set(shape, made);
    return made;
  }

  /** For a column that cannot be named: masked as the first column rule masks (fail closed). */
  private anyColumnChoice(masking: ValueMasking): MaskChoice | null {
    return masking.plan.firstColumnRule;
  }

  /** A DataRow of a result the client never had described (Execute without Describe): every value masked. */
  private maskUnknownRow(buf: Buffer, start: number, end: number, masking: ValueMasking): Buffer | null {
    const n = buf.readInt16BE(start);
    const choice = this.anyColumnChoice(masking);
    const columns = new Array<ColumnAction>(n).fill({ choice, label: 'column', text: false, textLike: false, json: false, jsonbBinary: false, detect: false });
    return this.maskRow(buf, start, end, { masking, at: 0, generation: 0, columns, masksColumns: true, detects: false }, false);
  }

  private detectOnlyPlan(buf: Buffer, start: number, masking: ValueMasking): RowPlan {
    const n = buf.readInt16BE(start);
    // Unknown types and formats: a value is read as its bytes are, and one a detector finds a secret
    // in is NULL — rewriting a span could break a binary value's own structure (an array's lengths).
    const columns = new Array<ColumnAction>(n).fill({ choice: null, label: 'column', text: false, opaque: true, textLike: false, json: false, jsonbBinary: false, detect: masking.detecting });
    return { masking, at: 0, generation: 0, columns, masksColumns: false, detects: masking.detecting };
  }

  private maskRow(buf: Buffer, start: number, end: number, plan: RowPlan, detect: boolean): Buffer | null {
    const n = buf.readInt16BE(start);
    if (this.cells.length < n) this.cells = new Array<Buffer | null | undefined>(n);
    const cells = this.cells;
    let pos = start + 2;
    let changed = false;
    let size = 2;
    for (let i = 0; i < n; i++) {
      const len = buf.readInt32BE(pos);
      pos += 4;
      cells[i] = undefined;
      const col = plan.columns[i];
      if (len >= 0 && col && (col.choice || (detect && col.detect))) {
        const r = this.maskCell(buf, pos, pos + len, col, plan.masking);
        if (r !== undefined) {
          cells[i] = r;
          changed = true;
          if (col.choice) this.note(`rows[*][${i}]`, col.choice.rule, col.label);
          else this.noteFound(`rows[*][${i}]`, col.label);
        }
      }
      size += 4 + (cells[i] === undefined ? Math.max(0, len) : cells[i] === null ? 0 : cells[i]!.length);
      pos += Math.max(0, len);
    }
    if (pos > end) throw new Error('truncated DataRow');
    if (!changed) return null;
    const out = Buffer.allocUnsafe(5 + size);
    out[0] = Backend.DataRow;
    out.writeInt32BE(4 + size, 1);
    out.writeInt16BE(n, 5);
    let at = 7;
    pos = start + 2;
    for (let i = 0; i < n; i++) {
      const len = buf.readInt32BE(pos);
      pos += 4;
      const cell = cells[i];
      if (cell === undefined) {
        out.writeInt32BE(len, at);
        at += 4;
        if (len > 0) at += buf.copy(out, at, pos, pos + len);
      } else if (cell === null) {
        out.writeInt32BE(-1, at);
        at += 4;
      } else {
        out.writeInt32BE(cell.length, at);
        at += 4;
        at += cell.copy(out, at);
      }
      pos += Math.max(0, len);
      cells[i] = undefined;
    }
    return out;
  }

  /** A value's replacement bytes, null for NULL, undefined to leave it. */
  private maskCell(buf: Buffer, start: number, end: number, col: ColumnAction, masking: ValueMasking): Buffer | null | undefined {
    if (col.choice) {
      // A value that is not text cannot take a text in its place: a typed driver would fail on it.
      if (col.choice.style === 'null' || !col.textLike) return null;
      if (col.fixed) return col.fixed;
      return this.encodeCell(masking.column(this.encoding.text(buf, col.jsonbBinary ? start + 1 : start, end), col.choice, col.label), col, true);
    }
    if (!col.text) {
      if (!col.opaque) return undefined;
      this.found.length = 0;
      return masking.secrets(buf.toString('latin1', start, end), this.found) === undefined ? undefined : null;
    }
    if (col.byteaHex) {
      if (end - start < 4 || buf[start] !== 0x5c || buf[start + 1] !== 0x78) return undefined; // \x
      this.found.length = 0;
      return masking.secrets(Buffer.from(buf.toString('latin1', start + 2, end), 'hex').toString('latin1'), this.found) === undefined ? undefined : null;
    }
    const text = this.encoding.text(buf, col.jsonbBinary ? start + 1 : start, end);
    this.found.length = 0;
    const found = masking.secrets(text, this.found);
    return found === undefined ? undefined : this.encodeCell(found, col, false);
  }

  /** A json column's value stays JSON: a whole replaced value is a JSON string, a marker inside one usually keeps it JSON. */
  private encodeCell(masked: Masked, col: ColumnAction, whole: boolean): Buffer | null {
    if (masked === null) return null;
    const text = col.json && (whole || !looksLikeJson(masked)) ? JSONstringify(masked) : masked;
    const bytes = this.encodeText(text);
    return col.jsonbBinary ? Buffer.concat([JSONB_VERSION, bytes]) : bytes;
  }

  /** Text in the client's encoding; a replacement the encoding cannot carry faithfully becomes the plain marker. */
  private encodeText(text: string): Buffer {
    if (this.encoding.isUtf8) return Buffer.from(text, 'utf8');
    if (/^[\x00-\x7f]*$/.test(text)) return Buffer.from(text, 'latin1');
    return Buffer.from('[masked]', 'latin1');
  }

  // ---- COPY TO STDOUT ----

  private copyPlan(copy: CopyOutShape, masking: ValueMasking): CopyPlan | 'wait' {
    const known = this.copyPlans.get(copy);
    if (known && !(known instanceof Promise) && known.masking === masking) return known;
    if (known instanceof Promise) return 'wait';
    const statement = (copy.text !== null ? readCopyStatement(copy.text, copy.statementIndex) : null)
      ?? { relation: null, format: copy.format === 1 ? 'binary' : 'text', delimiter: '\t', nullString: '\\N', quote: '"', escape: '"', header: false };
    const n = copy.columnFormats.length;
    const make = (names: Array<ColumnName | null> | null): CopyPlan => {
      const all = names === null ? this.anyColumnChoice(masking) : null;
      const choices = Array.from({ length: n }, (_, i) => {
        if (!masking.plan.masksColumns) return null;
        if (all) return all;
        const c = names![i];
        return c ? masking.plan.column(c.schema, c.table, c.column) : all;
      });
      const labels = Array.from({ length: n }, (_, i) => names?.[i]?.column ?? 'column');
      // (Binary COPY: a field a detector finds a secret in is NULL, as a masked column's are.)
      const detect = masking.detecting;
      return { masking, statement, choices, labels, detect, masksColumns: choices.some((c) => c !== null), seen: 0 };
    };
    if (!masking.plan.masksColumns) {
      const plan = make([]);
      this.copyPlans.set(copy, plan);
      return plan;
    }
    // Columns are known by name only for COPY of a relation; COPY (query) masks every column (fail closed).
    if (!statement.relation) {
      const plan = make(null);
      this.copyPlans.set(copy, plan);
      return plan;
    }
    const rel = statement.relation;
    const lookup = this.names.relation(rel.schema, rel.name, rel.columns).then(
      (names) => { this.copyPlans.set(copy, make(names && names.length === n ? names : null)); },
      () => { this.copyPlans.set(copy, make(null)); },
    );
    this.copyPlans.set(copy, lookup);
    this.wait(lookup);
    return 'wait';
  }

  private maskCopy(buf: Buffer, start: number, end: number, plan: CopyPlan, detect: boolean): Buffer | null {
    const first = plan.seen === 0;
    plan.seen++;
    if (!plan.masksColumns && !detect) return null;
    const s = plan.statement;
    if (s.format === 'binary') {
      const r = maskBinaryCopy(buf.subarray(start, end), first, (i, value) => {
        const c = plan.choices[i] ?? null;
        if (c) { this.note(`copy[*][${i}]`, c.rule, plan.labels[i] ?? 'column'); return true; }
        if (!detect) return false;
        this.found.length = 0;
        if (plan.masking.secrets(value.toString('latin1'), this.found) === undefined) return false;
        this.noteFound(`copy[*][${i}]`, plan.labels[i] ?? 'column');
        return true;
      });
      if (r === 'unreadable') return copyData(Buffer.alloc(0)); // fail closed: nothing of what could not be read
      return r === null ? null : copyData(r);
    }
    if (first && s.header) return null;
    const text = this.encoding.text(buf, start, end);
    const mask = (column: number, value: string): Masked | undefined => {
      const choice = plan.choices[column] ?? null;
      const label = plan.labels[column] ?? 'column';
      if (choice) {
        this.note(`copy[*][${column}]`, choice.rule, label);
        return choice.style === 'null' ? null : plan.masking.column(value, choice, label);
      }
      if (!detect) return undefined;
      this.found.length = 0;
      // A bytea field (\x and hex digits) is read by its bytes and masked whole.
      const bytes = value.length >= 12 && BYTEA_HEX_TEXT.test(value) ? Buffer.from(value.slice(2), 'hex').toString('latin1') : null;
      const found = plan.masking.secrets(bytes ?? value, this.found);
      if (found === undefined) return undefined;
      const detector = this.found[0]?.detector ?? 'secret';
      this.noteFound(`copy[*][${column}]`, label);
      return bytes === null || found === null ? found : `[masked:${detector}]`;
    };
    // PostgreSQL sends one row per CopyData; a message holding several lines is masked line by line.
    const ending = text.endsWith('\r\n') ? '\r\n' : text.endsWith('\n') ? '\n' : '';
    const body = text.slice(0, text.length - ending.length);
    const lines = s.format === 'csv' ? [body] : body.split('\n');
    let changed = false;
    const out = lines.map((line) => {
      const r = s.format === 'csv' ? maskCsvRow(line, s, mask) : maskTextRow(line, s, mask);
      if (r === null) return line;
      changed = true;
      return r;
    });
    return changed ? copyData(this.encodeText(out.join('\n') + ending)) : null;
  }

  // ---- waiting for a lookup ----

  private wait(lookup: Promise<void>): void {
    const p = lookup.then(() => {
      if (this.waitingFor !== p) return;
      this.waitingFor = null;
      this.replay();
    }, (err: unknown) => this.onError(err as Error));
    this.waitingFor = p;
  }

  /** The frames that waited, in order, until one waits again. */
  private replay(): void {
    const queue = this.queue;
    this.queue = [];
    try {
      for (let i = 0; i < queue.length; i++) {
        const q = queue[i]!;
        if (this.waitingFor) { this.queue.push(q); continue; }
        this.notes.length = 0;
        const r = this.process(q.type, q.body, 0, q.body.length);
        if (r === 'wait') { this.queue.push(q); continue; }
        if (r && this.notes.length > 0) this.tracker.maskedFrame(this.notes);
        if (r) this.tracker.serverFrame(q.type, r, 5, r.length);
        else this.tracker.serverFrame(q.type, q.body, 0, q.body.length);
        this.out.push(r ?? Buffer.concat([header(q.type, q.body.length), q.body]));
      }
    } catch (err) {
      this.onError(err as Error);
      return;
    }
    this.onReady();
  }
}

const JSONB_VERSION = Buffer.from([1]);
const DDL_TAG = /^(?:ALTER|DROP|CREATE) /;
/** ErrorResponse / NoticeResponse field codes, by the names the recording gives them. */
const NOTICE_FIELDS: Record<number, string> = { 0x4d: 'message', 0x44: 'detail', 0x48: 'hint', 0x57: 'where', 0x71: 'internalQuery', 0x73: 'schema', 0x74: 'table', 0x63: 'column', 0x64: 'dataType', 0x6e: 'constraint' };
const ZERO = Buffer.from([0]);
const JSONstringify = (s: string): string => globalThis.JSON.stringify(s);

/** A detector's marker inside a JSON text keeps it JSON; a whole replaced value is a JSON string. */
function looksLikeJson(s: string): boolean {
  try { globalThis.JSON.parse(s); return true; } catch { return false; }
}

/** A bytea as PostgreSQL writes it in text: \x, then pairs of hex digits. */
const BYTEA_HEX_TEXT = /^\\x(?:[0-9a-fA-F]{2})+$/;

/** Whether buf[start, end) holds \x (a bytea in text format may be in it). */
function hasHex(buf: Buffer, start: number, end: number): boolean {
  const at = buf.indexOf('\\x', start, 'latin1');
  return at >= 0 && at < end;
}

function header(type: number, bodyLength: number): Buffer {
  const h = Buffer.allocUnsafe(5);
  h[0] = type;
  h.writeInt32BE(bodyLength + 4, 1);
  return h;
}

function copyData(body: Buffer): Buffer {
  return Buffer.concat([header(Backend.CopyData, body.length), body]);
}

