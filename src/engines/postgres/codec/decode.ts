// Decoders for the message bodies the gateway needs to understand. Each takes the body slice
// (after type and length) and decodes only the fields asked for.
import { ProtocolError } from './frame-scanner.ts';

/** Decodes a byte range as text: UTF-8 by default, or the session's client encoding. */
export type TextOf = (buf: Buffer, start: number, end: number) => string;

export const utf8Text: TextOf = (buf, start, end) => buf.toString('utf8', start, end);

export function readCString(buf: Buffer, pos: number, end: number, text: TextOf = utf8Text): { value: string; next: number } {
  const zero = cStringEnd(buf, pos, end);
  return { value: text(buf, pos, zero), next: zero + 1 };
}

/** Offset of the zero byte that ends the string starting at `pos`. */
export function cStringEnd(buf: Buffer, pos: number, end: number): number {
  const zero = buf.indexOf(0, pos);
  if (zero < 0 || zero >= end) throw new ProtocolError('unterminated string in message');
  return zero;
}

export interface StartupMessage { protocol: number; params: Map<string, string> }

/** Body of a startup packet after its length: protocol version and name/value pairs. */
export function decodeStartup(buf: Buffer, start: number, end: number): StartupMessage {
  const protocol = buf.readInt32BE(start);
  const params = new Map<string, string>();
  let pos = start + 4;
  while (pos < end && buf[pos] !== 0) {
    const name = readCString(buf, pos, end);
    const value = readCString(buf, name.next, end);
    params.set(name.value, value.value);
    pos = value.next;
  }
  if (pos >= end || buf[pos] !== 0) throw new ProtocolError('startup packet is not terminated');
  return { protocol, params };
}

export function decodeQuery(buf: Buffer, start: number, end: number): string {
  return readCString(buf, start, end).value;
}

export interface ParseMessage { name: string; text: string; paramTypes: number[]; textStart: number; textEnd: number }

export function decodeParse(buf: Buffer, start: number, end: number, textOf: TextOf = utf8Text): ParseMessage {
  const name = readCString(buf, start, end, textOf);
  const textEnd = cStringEnd(buf, name.next, end);
  const text = { value: textOf(buf, name.next, textEnd), next: textEnd + 1 };
  let pos = text.next;
  if (pos + 2 > end) throw new ProtocolError('truncated Parse message');
  const count = buf.readInt16BE(pos);
  pos += 2;
  if (count < 0 || pos + count * 4 > end) throw new ProtocolError('truncated Parse message');
  const paramTypes = new Array<number>(count);
  for (let i = 0; i < count; i++) paramTypes[i] = buf.readUInt32BE(pos + i * 4);
  return { name: name.value, text: text.value, paramTypes, textStart: name.next, textEnd };
}

/** A bound parameter as recorded: text-format values as text, binary ones as hex, NULL as null. */
export type BoundValue = string | null | { binary: string };

export interface BindMessage { portal: string; statement: string; params: BoundValue[]; resultFormats: number[] }

export function decodeBind(buf: Buffer, start: number, end: number, maxParamBytes: number, textOf: TextOf = utf8Text): BindMessage {
  const portal = readCString(buf, start, end, textOf);
  const statement = readCString(buf, portal.next, end, textOf);
  const args = decodeArguments(buf, statement.next, end, maxParamBytes, textOf, 'Bind');
  let pos = args.next;
  if (pos + 2 > end) throw new ProtocolError('truncated Bind message');
  const resultCount = buf.readInt16BE(pos); pos += 2;
  if (resultCount < 0 || pos + resultCount * 2 > end) throw new ProtocolError('invalid Bind message');
  const resultFormats = new Array<number>(resultCount);
  for (let i = 0; i < resultCount; i++) resultFormats[i] = buf.readInt16BE(pos + i * 2);
  return { portal: portal.value, statement: statement.value, params: args.values, resultFormats };
}

export interface FunctionCallMessage { oid: number; args: BoundValue[]; resultFormat: number }

/** FunctionCall (fast-path, PQfn): function OID, argument formats and values, result format. */
export function decodeFunctionCall(buf: Buffer, start: number, end: number, maxParamBytes: number, textOf: TextOf = utf8Text): FunctionCallMessage {
  if (start + 4 > end) throw new ProtocolError('truncated FunctionCall message');
  const oid = buf.readUInt32BE(start);
  const args = decodeArguments(buf, start + 4, end, maxParamBytes, textOf, 'FunctionCall');
  if (args.next + 2 > end) throw new ProtocolError('truncated FunctionCall message');
  return { oid, args: args.values, resultFormat: buf.readInt16BE(args.next) };
}

/** Format codes then values, as Bind and FunctionCall carry them; each value cut to maxBytes. */
function decodeArguments(buf: Buffer, pos: number, end: number, maxBytes: number, textOf: TextOf, what: string): { values: BoundValue[]; next: number } {
  const need = (n: number): void => { if (pos + n > end) throw new ProtocolError(`truncated ${what} message`); };
  need(2);
  const formatCount = buf.readInt16BE(pos); pos += 2;
  if (formatCount < 0) throw new ProtocolError(`invalid ${what} message`);
  need(formatCount * 2);
  const formatsAt = pos;
  pos += formatCount * 2;
  need(2);
  const count = buf.readInt16BE(pos); pos += 2;
  if (count < 0) throw new ProtocolError(`invalid ${what} message`);
  const values = new Array<BoundValue>(count);
  for (let i = 0; i < count; i++) {
    need(4);
    const len = buf.readInt32BE(pos); pos += 4;
    if (len === -1) { values[i] = null; continue; }
    if (len < 0) throw new ProtocolError(`invalid argument length in ${what} message`);
    need(len);
    const format = formatCount === 0 ? 0 : buf.readInt16BE(formatsAt + (formatCount === 1 ? 0 : i) * 2);
    const shown = Math.min(len, maxBytes);
    const value = format === 1 ? { binary: buf.toString('hex', pos, pos + shown) } : textOf(buf, pos, pos + shown);
    values[i] = len > shown && typeof value === 'string' ? `${value}…[${len} bytes]` : value;
    pos += len;
  }
  return { values, next: pos };
}

export interface ExecuteMessage { portal: string; maxRows: number }

export function decodeExecute(buf: Buffer, start: number, end: number): ExecuteMessage {
  const portal = readCString(buf, start, end);
  if (portal.next + 4 > end) throw new ProtocolError('truncated Execute message');
  return { portal: portal.value, maxRows: buf.readInt32BE(portal.next) };
}

/** Close and Describe: a kind byte ('S' statement or 'P' portal) and a name. */
export function decodeTarget(buf: Buffer, start: number, end: number): { kind: number; name: string } {
  if (start >= end) throw new ProtocolError('truncated message');
  return { kind: buf[start], name: readCString(buf, start + 1, end).value };
}

/** A RowDescription field: its output name, the table column it comes from (0, 0 for an expression), its type and format. */
export interface ColumnDescription { name: string; tableOid: number; attnum: number; typeOid: number; format: number }

export function decodeRowDescription(buf: Buffer, start: number, end: number, textOf: TextOf = utf8Text): ColumnDescription[] {
  const count = buf.readInt16BE(start);
  const columns = new Array<ColumnDescription>(count);
  let pos = start + 2;
  for (let i = 0; i < count; i++) {
    const name = readCString(buf, pos, end, textOf);
    pos = name.next;
    columns[i] = { name: name.value, tableOid: buf.readUInt32BE(pos), attnum: buf.readInt16BE(pos + 4), typeOid: buf.readUInt32BE(pos + 6), format: buf.readInt16BE(pos + 16) };
    pos += 18;
  }
  return columns;
}

/** Decodes a DataRow into text cells (binary cells as hex), stopping once `budget` bytes are used. */
export function decodeDataRow(buf: Buffer, start: number, end: number, formats: ArrayLike<number>, budget: number, textOf: TextOf = utf8Text): { cells: Array<string | null>; bytes: number } {
  const count = buf.readInt16BE(start);
  const cells = new Array<string | null>(count);
  let pos = start + 2;
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const len = buf.readInt32BE(pos);
    pos += 4;
    if (len < 0) { cells[i] = null; continue; }
    const take = Math.max(0, Math.min(len, budget - bytes));
    const binary = (formats.length === 1 ? formats[0] : formats[i]) === 1;
    let text = binary ? buf.toString('hex', pos, pos + take) : textOf(buf, pos, pos + take);
    if (take < len) text += `…[${len} bytes]`;
    cells[i] = text;
    bytes += take;
    pos += len;
    if (pos > end) throw new ProtocolError('truncated DataRow');
  }
  return { cells, bytes };
}

export function decodeCommandComplete(buf: Buffer, start: number, end: number): string {
  return readCString(buf, start, end).value;
}

/** Rows affected or returned, from a command tag such as "SELECT 5", "INSERT 0 3", "COPY 10". */
export function rowsFromTag(tag: string): number | null {
  const space = tag.lastIndexOf(' ');
  if (space < 0) return null;
  const n = Number(tag.slice(space + 1));
  return Number.isInteger(n) ? n : null;
}

export interface ErrorFields { severity: string; code: string; message: string; detail?: string; hint?: string; position?: string }

/** ErrorResponse and NoticeResponse: (field type byte, cstring)* then a zero byte. */
export function decodeErrorFields(buf: Buffer, start: number, end: number, textOf: TextOf = utf8Text): ErrorFields {
  const fields: ErrorFields = { severity: '', code: '', message: '' };
  let pos = start;
  while (pos < end && buf[pos] !== 0) {
    const type = buf[pos];
    const value = readCString(buf, pos + 1, end, textOf);
    pos = value.next;
    switch (type) {
      case 0x56: fields.severity = value.value; break; // V: non-localized severity
      case 0x53: if (!fields.severity) fields.severity = value.value; break; // S
      case 0x43: fields.code = value.value; break; // C
      case 0x4d: fields.message = value.value; break; // M
      case 0x44: fields.detail = value.value; break; // D
      case 0x48: fields.hint = value.value; break; // H
      case 0x50: fields.position = value.value; break; // P
    }
  }
  return fields;
}

export function decodeParameterStatus(buf: Buffer, start: number, end: number): { name: string; value: string } {
  const name = readCString(buf, start, end);
  return { name: name.value, value: readCString(buf, name.next, end).value };
}

export function decodeNotification(buf: Buffer, start: number, end: number, textOf: TextOf = utf8Text): { pid: number; channel: string; payload: string } {
  const pid = buf.readInt32BE(start);
  const channel = readCString(buf, start + 4, end, textOf);
  return { pid, channel: channel.value, payload: readCString(buf, channel.next, end, textOf).value };
}
