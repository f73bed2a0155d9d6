// Builders for the messages the gateway writes itself (its own handshake, errors, and the
// upstream login). Relayed traffic is never re-encoded.
import { PROTOCOL_3_0, CANCEL_REQUEST_CODE, SSL_REQUEST_CODE } from './protocol.ts';

export function typed(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function cstrings(...values: string[]): Buffer {
  return Buffer.concat(values.map((v) => Buffer.from(v + '\0', 'utf8')));
}

export interface ErrorInfo { severity?: 'ERROR' | 'FATAL'; code: string; message: string; detail?: string; hint?: string }

export function errorResponse(e: ErrorInfo): Buffer {
  return fieldsMessage(0x45, e.severity ?? 'ERROR', e);
}

/** A NoticeResponse: the same fields as an error, severity NOTICE. */
export function noticeResponse(e: Omit<ErrorInfo, 'severity'>): Buffer {
  return fieldsMessage(0x4e, 'NOTICE', e);
}

function fieldsMessage(type: number, severity: string, e: Omit<ErrorInfo, 'severity'>): Buffer {
  const parts = [`S${severity}`, `V${severity}`, `C${e.code}`, `M${e.message}`];
  if (e.detail) parts.push(`D${e.detail}`);
  if (e.hint) parts.push(`H${e.hint}`);
  return typed(type, Buffer.concat([cstrings(...parts), Buffer.from([0])]));
}

export function authenticationRequest(code: number, extra?: Buffer): Buffer {
  const body = Buffer.alloc(4 + (extra?.length ?? 0));
  body.writeInt32BE(code, 0);
  extra?.copy(body, 4);
  return typed(0x52, body);
}

export function parameterStatus(name: string, value: string): Buffer {
  return typed(0x53, cstrings(name, value));
}

export function backendKeyData(pid: number, secret: Buffer): Buffer {
  const body = Buffer.allocUnsafe(4 + secret.length);
  body.writeInt32BE(pid, 0);
  secret.copy(body, 4);
  return typed(0x4b, body);
}

export function readyForQuery(status: number): Buffer {
  return typed(0x5a, Buffer.from([status]));
}

/** Tells a client which protocol minor version and which _pq_ options the gateway speaks. */
export function negotiateProtocolVersion(newestMinor: number, unsupportedOptions: string[]): Buffer {
  const head = Buffer.alloc(8);
  head.writeInt32BE((3 << 16) | newestMinor, 0);
  head.writeInt32BE(unsupportedOptions.length, 4);
  return typed(0x76, Buffer.concat([head, cstrings(...unsupportedOptions)]));
}

export function startupMessage(params: Record<string, string>): Buffer {
  const pairs = Object.entries(params).flatMap(([k, v]) => [k, v]);
  const body = Buffer.concat([cstrings(...pairs), Buffer.from([0])]);
  const out = Buffer.allocUnsafe(8 + body.length);
  out.writeInt32BE(8 + body.length, 0);
  out.writeInt32BE(PROTOCOL_3_0, 4);
  body.copy(out, 8);
  return out;
}

export function sslRequest(): Buffer {
  const out = Buffer.allocUnsafe(8);
  out.writeInt32BE(8, 0);
  out.writeInt32BE(SSL_REQUEST_CODE, 4);
  return out;
}

export function cancelRequest(pid: number, secret: Buffer): Buffer {
  const out = Buffer.allocUnsafe(12 + secret.length);
  out.writeInt32BE(12 + secret.length, 0);
  out.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  out.writeInt32BE(pid, 8);
  secret.copy(out, 12);
  return out;
}

export function passwordMessage(password: string): Buffer {
  return typed(0x70, cstrings(password));
}

export function saslInitialResponse(mechanism: string, data: Buffer): Buffer {
  const len = Buffer.allocUnsafe(4);
  len.writeInt32BE(data.length, 0);
  return typed(0x70, Buffer.concat([cstrings(mechanism), len, data]));
}

export function saslResponse(data: Buffer): Buffer {
  return typed(0x70, data);
}

export function query(text: string): Buffer {
  return typed(0x51, cstrings(text));
}

export function terminate(): Buffer {
  return typed(0x58, Buffer.alloc(0));
}
