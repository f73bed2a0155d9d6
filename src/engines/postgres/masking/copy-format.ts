// What a COPY … TO STDOUT sends, for masking by column: which relation and columns it reads (from
// the statement, read with the real parser) and its format options; and the rewriting of one row
// of its text, CSV or binary data with some fields replaced.
import { parseSync } from 'libpg-query';

export interface CopyStatement {
  /** The relation read (null: COPY (query) … — its columns cannot be told by name). */
  relation: { schema: string | null; name: string; columns: string[] | null } | null;
  format: 'text' | 'csv' | 'binary';
  delimiter: string;
  nullString: string;
  quote: string;
  escape: string;
  header: boolean;
}

type Node = Record<string, unknown>;

/** The COPY that runs as statement `index` of `text`; null when the text cannot be read so. */
export function readCopyStatement(text: string, index: number): CopyStatement | null {
  let stmts: Array<{ stmt?: Node }>;
  try {
    stmts = (parseSync(text) as { stmts?: Array<{ stmt?: Node }> }).stmts ?? [];
  } catch {
    return null;
  }
  // The parser reads plain literals as PostgreSQL does by default (standard_conforming_strings on).
  // A client may turn it off, and the server then reads a backslash in 'a\'' as an escape: where
  // its literals end, and so which statement is which (select 'a\'; copy decoy …; select $$'; copy
  // hr.staff …; --$$ runs COPY hr.staff as the second statement) and what an option holds
  // (delimiter '\t' is a tab). Such a text cannot be read by column: null (every column masked).
  const backslash = text.includes('\\');
  if (backslash && stmts.length > 1) return null;
  const copy = stmts[index]?.stmt?.CopyStmt as Node | undefined;
  if (!copy || copy.is_from) return null;
  const options = new Map<string, unknown>();
  for (const o of (copy.options as Node[] | undefined) ?? []) {
    const d = o.DefElem as Node | undefined;
    if (d) options.set(String(d.defname), d.arg === undefined ? true : argValue(d.arg as Node));
  }
  if (backslash && [...options.values()].some((v) => typeof v === 'string' && v.includes('\\'))) return null;
  const format = String(options.get('format') ?? 'text').toLowerCase();
  if (format !== 'text' && format !== 'csv' && format !== 'binary') return null;
  const csv = format === 'csv';
  const quote = typeof options.get('quote') === 'string' ? options.get('quote') as string : '"';
  const header = options.get('header');
  const rel = copy.relation as Node | undefined;
  return {
    relation: rel ? {
      schema: typeof rel.schemaname === 'string' ? rel.schemaname : null, name: String(rel.relname),
      columns: copy.attlist ? (copy.attlist as Node[]).map((a) => String((a.String as Node | undefined)?.sval ?? '')) : null,
    } : null,
    format,
    delimiter: typeof options.get('delimiter') === 'string' ? options.get('delimiter') as string : csv ? ',' : '\t',
    nullString: typeof options.get('null') === 'string' ? options.get('null') as string : csv ? '' : '\\N',
    quote,
    escape: typeof options.get('escape') === 'string' ? options.get('escape') as string : quote,
    header: header === true || (typeof header === 'string' && /^(true|on|1|yes)$/i.test(header)) || header === 1,
  };
}

function argValue(arg: Node): unknown {
  if (arg.String) return (arg.String as Node).sval;
  if (arg.Boolean) return (arg.Boolean as Node).boolval === true;
  if (arg.Integer) return (arg.Integer as Node).ival;
  return true;
}

/** A field's replacement: a text, or NULL. undefined leaves the field as it is. */
export type FieldMask = (column: number, value: string) => string | null | undefined;

const TEXT_ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', b: '\b', f: '\f', v: '\v', '\\': '\\' };

/** A text-format field's value (backslash escapes undone; octal/hex escapes kept as written). */
function unescapeText(field: string): string {
  if (!field.includes('\\')) return field;
  return field.replace(/\\(.)/gs, (m, c: string) => TEXT_ESCAPES[c] ?? (/[0-7x]/.test(c) ? m : c));
}

function escapeText(value: string, delimiter: string): string {
  let out = '';
  for (const ch of value) {
    if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === delimiter) out += `\\${ch}`;
    else out += ch;
  }
  return out;
}

/** One line of text-format COPY data (no trailing newline) with masked fields; null when nothing changed. */
export function maskTextRow(line: string, c: CopyStatement, mask: FieldMask): string | null {
  const fields = line.split(c.delimiter);
  let changed = false;
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    if (f === c.nullString) continue;
    const m = mask(i, unescapeText(f));
    if (m === undefined) continue;
    fields[i] = m === null ? c.nullString : escapeText(m, c.delimiter);
    changed = true;
  }
  return changed ? fields.join(c.delimiter) : null;
}

/** One CSV record (its line ending excluded) with masked fields; null when nothing changed. */
export function maskCsvRow(record: string, c: CopyStatement, mask: FieldMask): string | null {
  const out: string[] = [];
  let changed = false;
  let i = 0;
  let column = 0;
  const n = record.length;
  for (;;) {
    const begin = i;
    let value = '';
    let quoted = false;
    while (i < n && record.startsWith(c.delimiter, i) === false) {
      const ch = record[i]!;
      if (ch === c.quote) {
        quoted = true;
        i++;
        while (i < n) {
          if (record[i] === c.escape && c.escape !== c.quote && i + 1 < n && (record[i + 1] === c.quote || record[i + 1] === c.escape)) { value += record[i + 1]; i += 2; continue; }
          if (record[i] === c.quote) {
            if (c.escape === c.quote && record[i + 1] === c.quote) { value += c.quote; i += 2; continue; }
            i++;
            break;
          }
          value += record[i];
          i++;
        }
        continue;
      }
      value += ch;
      i++;
    }
    const raw = record.slice(begin, i);
    const isNull = !quoted && raw === c.nullString;
    const m = isNull ? undefined : mask(column, value);
    if (m === undefined) out.push(raw);
    else {
      changed = true;
      out.push(m === null ? c.nullString : quoteCsv(m, c));
    }
    column++;
    if (i >= n) break;
    i += c.delimiter.length;
  }
  return changed ? out.join(c.delimiter) : null;
}

function quoteCsv(value: string, c: CopyStatement): string {
  let out = c.quote;
  for (const ch of value) out += ch === c.quote || (ch === c.escape && c.escape !== c.quote) ? c.escape + ch : ch;
  return out + c.quote;
}

const BINARY_SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/**
 * Binary COPY data of one CopyData message with the masked columns sent as NULL (the binary
 * format carries no types, so no value can be rewritten in place). `first`: the message carries
 * the file header. Returns null when nothing changed, or when the data cannot be read (then the
 * caller fails closed).
 */
export function maskBinaryCopy(data: Buffer, first: boolean, masked: (column: number, value: Buffer) => boolean): Buffer | null | 'unreadable' {
  let pos = 0;
  if (first) {
    if (data.length < 19 || !data.subarray(0, 11).equals(BINARY_SIGNATURE)) return 'unreadable';
    pos = 19 + data.readUInt32BE(15);
  }
  const pieces: Buffer[] = [];
  let from = 0;
  let changed = false;
  while (pos < data.length) {
    if (pos + 2 > data.length) return 'unreadable';
    const count = data.readInt16BE(pos);
    pos += 2;
    if (count === -1) break; // the trailer
    for (let i = 0; i < count; i++) {
      if (pos + 4 > data.length) return 'unreadable';
      const len = data.readInt32BE(pos);
      if (len >= 0 && pos + 4 + len <= data.length && masked(i, data.subarray(pos + 4, pos + 4 + len))) {
        pieces.push(data.subarray(from, pos), NULL_LENGTH);
        from = pos + 4 + len;
        changed = true;
      }
      pos += 4 + Math.max(0, len);
      if (pos > data.length) return 'unreadable';
    }
  }
  if (!changed) return null;
  pieces.push(data.subarray(from));
  return Buffer.concat(pieces);
}

const NULL_LENGTH = Buffer.from([0xff, 0xff, 0xff, 0xff]);
