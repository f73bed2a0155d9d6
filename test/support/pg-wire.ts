// A minimal raw PostgreSQL v3 protocol client over node:net (optionally TLS via SSLRequest).
//
// It is the "other driver" of the tests: it does not behave like libpq. It pipelines extended-
// protocol messages, stops reading on purpose, vanishes mid-stream, and with `send()` writes any
// bytes at all (hostile headers, truncated frames, garbage). It is written independently of the
// gateway's own codec (src/engines/postgres/codec), so a shared misunderstanding of the protocol
// cannot make both sides agree on a wrong answer.
//
// Reading is pull-style and lazy: bytes are framed only when a test asks for the next message,
// so the single unframed bytes of the SSLRequest/GSSENCRequest answers can be read with
// `readByte()` before any framed traffic.
import net from 'node:net';
import tls from 'node:tls';

export const PROTOCOL_3_0 = 196608; // 3 << 16
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
export const CANCEL_REQUEST_CODE = 80877102;

// ---- message builders ----------------------------------------------------------------------

function cstr(value: string): Buffer {
  return Buffer.from(value + '\0', 'utf8');
}

function int16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeInt16BE(n, 0);
  return b;
}

function int32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeInt32BE(n, 0);
  return b;
}

function typeByte(type: string | number): number {
  return typeof type === 'number' ? type : type.charCodeAt(0);
}

/** A typed message: type byte, then a length that counts itself and the body. */
export function frame(type: string | number, body: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = typeByte(type);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

/** Only a typed message's header, with any length at all (for hostile input). */
export function rawHeader(type: string | number, length: number): Buffer {
  const out = Buffer.allocUnsafe(5);
  out[0] = typeByte(type);
  out.writeInt32BE(length | 0, 1);
  return out;
}

/** An untyped startup-phase packet: length (counting itself), then the body. */
export function untyped(body: Buffer): Buffer {
  return Buffer.concat([int32(4 + body.length), body]);
}

export function startupPacket(params: Record<string, string>, version: number = PROTOCOL_3_0): Buffer {
  const pairs = Object.entries(params).map(([k, v]) => Buffer.concat([cstr(k), cstr(v)]));
  return untyped(Buffer.concat([int32(version), ...pairs, Buffer.from([0])]));
}

export function sslRequest(): Buffer {
  return untyped(int32(SSL_REQUEST_CODE));
}

export function gssencRequest(): Buffer {
  return untyped(int32(GSSENC_REQUEST_CODE));
}

export function cancelRequest(pid: number, secret: Buffer): Buffer {
  return untyped(Buffer.concat([int32(CANCEL_REQUEST_CODE), int32(pid), secret]));
}

export function passwordMessage(password: string): Buffer {
  return frame('p', cstr(password));
}

export function queryMessage(sql: string): Buffer {
  return frame('Q', cstr(sql));
}

export function parseMessage(name: string, sql: string, paramTypes: number[] = []): Buffer {
  return frame('P', Buffer.concat([cstr(name), cstr(sql), int16(paramTypes.length), ...paramTypes.map((t) => int32(t))]));
}

export type BindParam = string | Buffer | null;

/** Bind: text parameters by default; a Buffer parameter is sent as is in the format given for it. */
export function bindMessage(
  portal: string, statement: string, params: BindParam[], opts: { paramFormats?: number[]; resultFormats?: number[] } = {},
): Buffer {
  const paramFormats = opts.paramFormats ?? [];
  const resultFormats = opts.resultFormats ?? [];
  const values = params.map((p) => {
    if (p === null) return int32(-1);
    const bytes = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
    return Buffer.concat([int32(bytes.length), bytes]);
  });
  return frame('B', Buffer.concat([
    cstr(portal), cstr(statement),
    int16(paramFormats.length), ...paramFormats.map((f) => int16(f)),
    int16(params.length), ...values,
    int16(resultFormats.length), ...resultFormats.map((f) => int16(f)),
  ]));
}

export function describeMessage(kind: 'S' | 'P', name: string): Buffer {
  return frame('D', Buffer.concat([Buffer.from(kind), cstr(name)]));
}

export function executeMessage(portal = '', maxRows = 0): Buffer {
  return frame('E', Buffer.concat([cstr(portal), int32(maxRows)]));
}

export function closeMessage(kind: 'S' | 'P', name: string): Buffer {
  return frame('C', Buffer.concat([Buffer.from(kind), cstr(name)]));
}

export function syncMessage(): Buffer { return frame('S'); }
export function flushMessage(): Buffer { return frame('H'); }
export function terminateMessage(): Buffer { return frame('X'); }
export function copyDataMessage(data: Buffer | string): Buffer {
  return frame('d', typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
}
export function copyDoneMessage(): Buffer { return frame('c'); }
export function copyFailMessage(reason: string): Buffer { return frame('f', cstr(reason)); }

// ---- message decoders ----------------------------------------------------------------------

export interface WireMessage {
  /** The type byte as a character ('E', 'Z', 'D', …). */
  type: string;
  body: Buffer;
}

/** ErrorResponse / NoticeResponse fields by their one-letter codes, plus named shortcuts. */
export interface ErrorFields {
  severity: string;
  /** SQLSTATE (field 'C'). */
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  /** Every field by its type letter. */
  fields: Record<string, string>;
}

function readCStr(body: Buffer, pos: number): { value: string; next: number } {
  const zero = body.indexOf(0, pos);
  if (zero < 0) throw new Error('unterminated string in backend message');
  return { value: body.toString('utf8', pos, zero), next: zero + 1 };
}

export function decodeError(body: Buffer): ErrorFields {
  const fields: Record<string, string> = {};
  let pos = 0;
  while (pos < body.length && body[pos] !== 0) {
    const letter = String.fromCharCode(body[pos]);
    const s = readCStr(body, pos + 1);
    fields[letter] = s.value;
    pos = s.next;
  }
  return { severity: fields.V ?? fields.S ?? '', code: fields.C ?? '', message: fields.M ?? '', detail: fields.D, hint: fields.H, fields };
}

export function decodeDataRow(body: Buffer): Array<string | null> {
  const n = body.readInt16BE(0);
  const out: Array<string | null> = [];
  let pos = 2;
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(pos);
    pos += 4;
    if (len < 0) { out.push(null); continue; }
    out.push(body.toString('utf8', pos, pos + len));
    pos += len;
  }
  return out;
}

export function decodeRowDescription(body: Buffer): string[] {
  const n = body.readInt16BE(0);
  const names: string[] = [];
  let pos = 2;
  for (let i = 0; i < n; i++) {
    const s = readCStr(body, pos);
    names.push(s.value);
    pos = s.next + 18;
  }
  return names;
}

export function decodeCommandComplete(body: Buffer): string {
  return readCStr(body, 0).value;
}

export function decodeParameterStatus(body: Buffer): { name: string; value: string } {
  const name = readCStr(body, 0);
  return { name: name.value, value: readCStr(body, name.next).value };
}

export function decodeNotification(body: Buffer): { pid: number; channel: string; payload: string } {
  const channel = readCStr(body, 4);
  return { pid: body.readInt32BE(0), channel: channel.value, payload: readCStr(body, channel.next).value };
}

export function decodeBackendKeyData(body: Buffer): { pid: number; secret: Buffer } {
  return { pid: body.readInt32BE(0), secret: Buffer.from(body.subarray(4)) };
}

export function decodeAuthentication(body: Buffer): number {
  return body.readInt32BE(0);
}

/** Backend messages in readable form, for assertion messages. */
export function describeMessages(messages: WireMessage[]): string {
  return messages.map((m) => {
    switch (m.type) {
      case 'E': case 'N': { const e = decodeError(m.body); return `${m.type}(${e.code} ${e.message})`; }
      case 'C': return `C(${decodeCommandComplete(m.body)})`;
      case 'D': return `D(${JSON.stringify(decodeDataRow(m.body))})`;
      case 'Z': return `Z(${String.fromCharCode(m.body[0])})`;
      case 'S': { const p = decodeParameterStatus(m.body); return `S(${p.name}=${p.value})`; }
      default: return m.type;
    }
  }).join(' ');
}

// ---- the connection ------------------------------------------------------------------------

export class WireClosedError extends Error {
  constructor(detail = '') { super(`connection closed by the server${detail ? `: ${detail}` : ''}`); }
}

export class WireTimeoutError extends Error {
  constructor(what: string, ms: number) { super(`timed out after ${ms} ms waiting for ${what}`); }
}

/** An ErrorResponse where the test expected success. */
export class PgServerError extends Error {
  readonly fields: ErrorFields;
  constructor(fields: ErrorFields) {
    super(`${fields.severity} ${fields.code}: ${fields.message}`);
    this.fields = fields;
  }
}

export interface ConnectOptions {
  host: string;
  port: number;
  /** Negotiate TLS with an SSLRequest first (the server's certificate is not verified). */
  tls?: boolean;
  /** Start with a TLS ClientHello instead (PostgreSQL 17 "direct" TLS), offering these ALPN protocols. */
  directTls?: { alpn?: string[] };
  timeoutMs?: number;
  /** Source address to connect from (e.g. 127.0.0.2: another client address on loopback). */
  localAddress?: string;
}

export interface StartupResult {
  parameters: Map<string, string>;
  pid: number;
  secret: Buffer;
  /** Transaction status of the first ReadyForQuery ('I', 'T' or 'E'). */
  status: string;
  messages: WireMessage[];
}

export interface QueryResult {
  messages: WireMessage[];
  columns: string[];
  rows: Array<Array<string | null>>;
  tags: string[];
  errors: ErrorFields[];
  notices: ErrorFields[];
  /** Transaction status of the closing ReadyForQuery. */
  status: string;
}

const DEFAULT_TIMEOUT = 10_000;

export class PgWire {
  socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private waiter: (() => void) | null = null;
  private endedFlag = false;
  private endError: Error | null = null;
  /** Total bytes received from the server. */
  bytesReceived = 0;
  private closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closedPromise = new Promise((resolve) => { this.resolveClosed = resolve; });
    this.attach(socket);
  }

  /** Opens a TCP connection (and with `tls`, negotiates TLS through an SSLRequest). */
  static async connect(opts: ConnectOptions): Promise<PgWire> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT;
    const socket = opts.directTls
      ? tls.connect({ host: opts.host, port: opts.port, rejectUnauthorized: false, ALPNProtocols: opts.directTls.alpn })
      : net.connect({ host: opts.host, port: opts.port, localAddress: opts.localAddress });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { socket.destroy(); reject(new WireTimeoutError(opts.directTls ? 'the TLS handshake' : 'TCP connect', timeoutMs)); }, timeoutMs);
      socket.once(opts.directTls ? 'secureConnect' : 'connect', () => { clearTimeout(timer); resolve(); });
      socket.once('error', (err) => { clearTimeout(timer); reject(err); });
    });
    const wire = new PgWire(socket);
    if (opts.tls) await wire.startTls(opts.timeoutMs);
    return wire;
  }

  private attach(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  private detachListeners(socket: net.Socket): void {
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('close', this.onEnd);
    socket.off('error', this.onError);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.bytesReceived += chunk.length;
    if (this.pos >= this.buf.length) {
      this.buf = chunk;
    } else {
      this.buf = Buffer.concat([this.buf.subarray(this.pos), chunk]);
    }
    this.pos = 0;
    this.wake();
  };

  private readonly onEnd = (): void => {
    if (!this.endedFlag) {
      this.endedFlag = true;
      this.resolveClosed();
    }
    this.wake();
  };

  private readonly onError = (err: Error): void => {
    this.endError ??= err;
    this.onEnd();
  };

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** True once the server closed (or reset) the connection. */
  get closed(): boolean { return this.endedFlag; }
  /** Settles when the connection is closed, from either side. */
  get whenClosed(): Promise<void> { return this.closedPromise; }
  /** The socket error that closed the connection, if any (ECONNRESET, …). */
  get error(): Error | null { return this.endError; }
  /** Bytes received but not yet read as messages. */
  get unreadBytes(): number { return this.buf.length - this.pos; }

  private async waitForData(deadline: number, what: string, timeoutMs: number): Promise<void> {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new WireTimeoutError(what, timeoutMs);
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      timer = setTimeout(resolve, remaining);
      this.waiter = resolve;
    });
    clearTimeout(timer);
  }

  /** Writes raw bytes: anything at all, valid or not. */
  send(data: Buffer | Buffer[]): void {
    this.socket.write(Array.isArray(data) ? Buffer.concat(data) : data);
  }

  /** Writes raw bytes and resolves once they are handed to the kernel. */
  sendAndFlush(data: Buffer | Buffer[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(Array.isArray(data) ? Buffer.concat(data) : data, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** One unframed byte (the answer to SSLRequest or GSSENCRequest). */
  async readByte(timeoutMs = DEFAULT_TIMEOUT): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.pos < this.buf.length) return this.buf[this.pos++];
      if (this.endedFlag) throw new WireClosedError(this.endError?.message);
      await this.waitForData(deadline, 'a single-byte answer', timeoutMs);
    }
  }

  /** The next unread byte without consuming it (to see what kind of answer is coming). */
  async peekByte(timeoutMs = DEFAULT_TIMEOUT): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.pos < this.buf.length) return this.buf[this.pos];
      if (this.endedFlag) throw new WireClosedError(this.endError?.message);
      await this.waitForData(deadline, 'a byte', timeoutMs);
    }
  }

  /** A whole framed message if one is buffered. */
  private tryFrame(): WireMessage | null {
    const available = this.buf.length - this.pos;
    if (available < 5) return null;
    const length = this.buf.readInt32BE(this.pos + 1);
    if (length < 4) throw new Error(`server sent a message with invalid length ${length}`);
    if (available < 1 + length) return null;
    const type = String.fromCharCode(this.buf[this.pos]);
    const body = this.buf.subarray(this.pos + 5, this.pos + 1 + length);
    this.pos += 1 + length;
    return { type, body };
  }

  /** The next backend message. Rejects with WireClosedError when the server closed first. */
  async next(timeoutMs = DEFAULT_TIMEOUT): Promise<WireMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.tryFrame();
      if (m) return m;
      if (this.endedFlag) {
        const partial = this.unreadBytes > 0 ? `${this.unreadBytes} bytes of an incomplete message left` : '';
        throw new WireClosedError([this.endError?.message, partial].filter(Boolean).join('; '));
      }
      await this.waitForData(deadline, 'a backend message', timeoutMs);
    }
  }

  /**
   * Hands every message to `handler` as it arrives (synchronously while data is buffered, which
   * is what makes multi-gigabyte results practical) until the handler returns true.
   */
  async consume(handler: (m: WireMessage) => boolean | void, timeoutMs = DEFAULT_TIMEOUT): Promise<void> {
    let deadline = Date.now() + timeoutMs;
    for (;;) {
      let m: WireMessage | null;
      let progressed = false;
      while ((m = this.tryFrame()) !== null) {
        progressed = true;
        if (handler(m) === true) return;
      }
      if (progressed) deadline = Date.now() + timeoutMs; // the timeout is an inactivity timeout
      if (this.endedFlag) throw new WireClosedError(this.endError?.message);
      await this.waitForData(deadline, 'backend messages', timeoutMs);
    }
  }

  /** Messages up to and including the first one `until` accepts. */
  async readUntil(until: (m: WireMessage) => boolean, timeoutMs = DEFAULT_TIMEOUT): Promise<WireMessage[]> {
    const out: WireMessage[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      out.push(m);
      if (until(m)) return out;
    }
  }

  /** Messages up to and including the next ReadyForQuery. */
  readUntilReady(timeoutMs = DEFAULT_TIMEOUT): Promise<WireMessage[]> {
    return this.readUntil((m) => m.type === 'Z', timeoutMs);
  }

  /**
   * Every message until the server closes the connection. Rejects if the server keeps the
   * connection open past the timeout. `trailing` counts bytes of an incomplete last message.
   */
  async readUntilClosed(timeoutMs = DEFAULT_TIMEOUT): Promise<{ messages: WireMessage[]; trailing: number; error: Error | null }> {
    const messages: WireMessage[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let m: WireMessage | null;
      while ((m = this.tryFrame()) !== null) messages.push(m);
      if (this.endedFlag) return { messages, trailing: this.unreadBytes, error: this.endError };
      await this.waitForData(deadline, 'the server to close the connection', timeoutMs);
    }
  }

  /** Sends an SSLRequest and, on 'S', continues over TLS. Throws if the server declines. */
  async startTls(timeoutMs = DEFAULT_TIMEOUT): Promise<void> {
    this.send(sslRequest());
    const answer = await this.readByte(timeoutMs);
    if (answer !== 0x53) throw new Error(`server declined TLS (answered 0x${answer.toString(16)})`);
    if (this.unreadBytes > 0) throw new Error('server sent unencrypted bytes after accepting TLS');
    const plain = this.socket;
    this.detachListeners(plain);
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, servername: undefined });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new WireTimeoutError('the TLS handshake', timeoutMs)), timeoutMs);
      secure.once('secureConnect', () => { clearTimeout(timer); resolve(); });
      secure.once('error', (err) => { clearTimeout(timer); reject(err); });
    });
    this.socket = secure;
    this.attach(secure);
  }

  /**
   * Sends a StartupMessage and answers a cleartext password request; resolves at the first
   * ReadyForQuery. An ErrorResponse rejects with PgServerError.
   */
  async startup(params: Record<string, string>, password?: string, opts: { version?: number; timeoutMs?: number } = {}): Promise<StartupResult> {
    this.send(startupPacket(params, opts.version));
    const result: StartupResult = { parameters: new Map(), pid: 0, secret: Buffer.alloc(0), status: '', messages: [] };
    for (;;) {
      const m = await this.next(opts.timeoutMs ?? DEFAULT_TIMEOUT);
      result.messages.push(m);
      switch (m.type) {
        case 'R': {
          const code = decodeAuthentication(m.body);
          if (code === 3) {
            if (password === undefined) throw new Error('server asked for a password and none was given');
            this.send(passwordMessage(password));
          } else if (code !== 0) {
            throw new Error(`unsupported authentication request ${code}`);
          }
          break;
        }
        case 'S': {
          const p = decodeParameterStatus(m.body);
          result.parameters.set(p.name, p.value);
          break;
        }
        case 'K': {
          const k = decodeBackendKeyData(m.body);
          result.pid = k.pid;
          result.secret = k.secret;
          break;
        }
        case 'E':
          throw new PgServerError(decodeError(m.body));
        case 'Z':
          result.status = String.fromCharCode(m.body[0]);
          return result;
        default:
          break; // NoticeResponse, NegotiateProtocolVersion: kept in messages
      }
    }
  }

  /** Runs one simple Query and collects everything up to its ReadyForQuery. */
  async query(sql: string, timeoutMs = DEFAULT_TIMEOUT): Promise<QueryResult> {
    this.send(queryMessage(sql));
    return summarize(await this.readUntilReady(timeoutMs));
  }

  /** Like query() but rejects with PgServerError if the server reported an error. */
  async queryOk(sql: string, timeoutMs = DEFAULT_TIMEOUT): Promise<QueryResult> {
    const r = await this.query(sql, timeoutMs);
    if (r.errors.length > 0) throw new PgServerError(r.errors[0]);
    return r;
  }

  pause(): void { this.socket.pause(); }
  resume(): void { this.socket.resume(); }

  /** Sends Terminate and closes our side. */
  terminate(): void {
    if (this.socket.destroyed) return;
    this.socket.end(terminateMessage());
  }

  /** Closes our side without Terminate (FIN). */
  end(): void { this.socket.end(); }

  /** Vanishes: closes the socket at once, without Terminate. */
  destroy(): void { this.socket.destroy(); }
}

/** Splits a message sequence into rows, tags, errors, notices and the final status. */
export function summarize(messages: WireMessage[]): QueryResult {
  const r: QueryResult = { messages, columns: [], rows: [], tags: [], errors: [], notices: [], status: '' };
  for (const m of messages) {
    switch (m.type) {
      case 'T': r.columns = decodeRowDescription(m.body); break;
      case 'D': r.rows.push(decodeDataRow(m.body)); break;
      case 'C': r.tags.push(decodeCommandComplete(m.body)); break;
      case 'E': r.errors.push(decodeError(m.body)); break;
      case 'N': r.notices.push(decodeError(m.body)); break;
      case 'Z': r.status = String.fromCharCode(m.body[0]); break;
      default: break;
    }
  }
  return r;
}

/** Opens a connection, authenticates, and returns it ready for queries. */
export async function connectAndLogin(
  opts: ConnectOptions & { user: string; database: string; password: string; params?: Record<string, string> },
): Promise<{ wire: PgWire; startup: StartupResult }> {
  const wire = await PgWire.connect(opts);
  try {
    const startup = await wire.startup({ user: opts.user, database: opts.database, ...opts.params }, opts.password, { timeoutMs: opts.timeoutMs });
    return { wire, startup };
  } catch (err) {
    wire.destroy();
    throw err;
  }
}

/**
 * Sends a CancelRequest on a fresh connection (plaintext as libpq up to 16 does, or with `tls` as
 * libpq 17 does); resolves when the server closes that connection, with the number of bytes it
 * sent back after the TLS negotiation (the protocol says none).
 */
export async function sendCancel(opts: ConnectOptions, pid: number, secret: Buffer): Promise<{ bytesReceived: number }> {
  const wire = await PgWire.connect(opts);
  wire.send(cancelRequest(pid, secret));
  const before = wire.bytesReceived;
  await wire.readUntilClosed(opts.timeoutMs ?? DEFAULT_TIMEOUT);
  wire.destroy();
  return { bytesReceived: wire.bytesReceived - before };
}
