// A tiny raw PostgreSQL client for the startup handshake, used by the auth tests to see exactly
// what the gateway answers — for instance the SQLSTATE of a refusal, which psql does not print for
// connection failures. Optional SSLRequest + TLS, StartupMessage, a cleartext password answer to
// AuthenticationCleartextPassword, and simple Query messages once logged in. Node built-ins only.
// (test/support/pg-wire.ts is the protocol-robustness tests' full client; this one stays minimal.)
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';

export interface PgErrorFields {
  severity: string;
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  /** Every field by its one-letter type. */
  fields: Record<string, string>;
}

export interface LoginMessage { type: string; body: Buffer }

/** Reads whole backend messages off a stream. */
class MessageReader {
  private buf: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private ended = false;

  constructor(stream: Duplex) {
    stream.on('data', (chunk: Buffer) => { this.buf = Buffer.concat([this.buf, chunk]); this.wake(); });
    stream.on('end', () => { this.ended = true; this.wake(); });
    stream.on('close', () => { this.ended = true; this.wake(); });
    stream.on('error', () => { this.ended = true; this.wake(); });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** The next message, or null if the connection closed at a message boundary. */
  async next(deadline: number): Promise<LoginMessage | null> {
    for (;;) {
      if (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1);
        if (this.buf.length >= 1 + len) {
          const msg = { type: String.fromCharCode(this.buf[0]), body: Buffer.from(this.buf.subarray(5, 1 + len)) };
          this.buf = this.buf.subarray(1 + len);
          return msg;
        }
      }
      if (this.ended) {
        if (this.buf.length === 0) return null;
        throw new Error(`connection closed inside a message (${this.buf.length} bytes pending)`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for the server');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.waiters.push(resolve)),
        new Promise<void>((_, reject) => { timer = setTimeout(() => reject(new Error('timed out waiting for the server')), left); }),
      ]).finally(() => clearTimeout(timer));
    }
  }
}

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

function typed(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

function startupMessage(params: Record<string, string>): Buffer {
  const version = Buffer.alloc(4);
  version.writeInt32BE(196608, 0);
  const parts: Buffer[] = [version];
  for (const [k, v] of Object.entries(params)) parts.push(cstr(k), cstr(v));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const len = Buffer.alloc(4);
  len.writeInt32BE(4 + body.length, 0);
  return Buffer.concat([len, body]);
}

export function parseErrorFields(body: Buffer): PgErrorFields {
  const fields: Record<string, string> = {};
  let pos = 0;
  while (pos < body.length && body[pos] !== 0) {
    const type = String.fromCharCode(body[pos]);
    const zero = body.indexOf(0, pos + 1);
    if (zero < 0) break;
    fields[type] = body.toString('utf8', pos + 1, zero);
    pos = zero + 1;
  }
  return {
    severity: fields.V ?? fields.S ?? '', code: fields.C ?? '', message: fields.M ?? '',
    ...(fields.D !== undefined ? { detail: fields.D } : {}), ...(fields.H !== undefined ? { hint: fields.H } : {}), fields,
  };
}

export interface LoginOptions {
  host: string;
  port: number;
  user: string;
  database: string;
  /** Sent in answer to AuthenticationCleartextPassword. Without it, a password request is an error. */
  password?: string;
  /** SSLRequest then TLS (certificate not verified, like sslmode=require). */
  tls?: boolean;
  /** Extra startup parameters (application_name, …). */
  params?: Record<string, string>;
  timeoutMs?: number;
}

export interface LoginSession {
  /** Authentication request codes the server sent (3 = cleartext, 0 = ok). */
  authRequests: number[];
  /** The ErrorResponse that ended the handshake, if any. */
  error?: PgErrorFields;
  /** True once ReadyForQuery arrived. */
  ready: boolean;
  /** ParameterStatus values. */
  parameters: Map<string, string>;
  /** Whether the connection went encrypted. */
  tls: boolean;
  /** True if the server closed the connection right after the handshake error (as it must for FATAL). */
  closedAfterError: boolean;
  /** Simple query: every message until ReadyForQuery. Only when ready. */
  query(sql: string): Promise<LoginMessage[]>;
  /** Sends Terminate and closes. */
  close(): Promise<void>;
}

/** Connects and runs the startup handshake; resolves with what the server said (never rejects on an ErrorResponse). */
export async function pgLogin(opts: LoginOptions): Promise<LoginSession> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  const sock = net.connect({ host: opts.host, port: opts.port });
  sock.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  let stream: Duplex = sock;
  let secure = false;
  if (opts.tls) {
    const req = Buffer.alloc(8);
    req.writeInt32BE(8, 0);
    req.writeInt32BE(80877103, 4);
    const first = await new Promise<Buffer>((resolve, reject) => {
      sock.once('data', resolve);
      sock.once('close', () => reject(new Error('closed before the SSL answer')));
      sock.write(req);
    });
    if (first.length !== 1 || first[0] !== 0x53) throw new Error(`server refused TLS (answer ${first.toString('hex')})`);
    const t = tls.connect({ socket: sock, rejectUnauthorized: false });
    t.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
    });
    stream = t;
    secure = true;
  }
  const reader = new MessageReader(stream);
  const session: LoginSession = {
    authRequests: [], ready: false, parameters: new Map(), tls: secure, closedAfterError: false,
    async query(sql: string): Promise<LoginMessage[]> {
      if (!session.ready) throw new Error('not connected');
      stream.write(typed('Q', cstr(sql)));
      const out: LoginMessage[] = [];
      const qDeadline = Date.now() + timeoutMs;
      for (;;) {
        const m = await reader.next(qDeadline);
        if (!m) throw new Error('connection closed during the query');
        out.push(m);
        if (m.type === 'Z') return out;
      }
    },
    async close(): Promise<void> {
      if (stream.destroyed) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { stream.destroy(); resolve(); }, 2000);
        stream.once('close', () => { clearTimeout(timer); resolve(); });
        stream.end(typed('X', Buffer.alloc(0)));
      });
    },
  };
  stream.write(startupMessage({ user: opts.user, database: opts.database, ...(opts.params ?? {}) }));
  for (;;) {
    const m = await reader.next(deadline);
    if (!m) throw new Error('server closed the connection during the handshake without an ErrorResponse');
    if (m.type === 'R') {
      const code = m.body.readInt32BE(0);
      session.authRequests.push(code);
      if (code === 3) {
        if (opts.password === undefined) throw new Error('server asked for a password and none was given');
        stream.write(typed('p', cstr(opts.password)));
      } else if (code !== 0) {
        throw new Error(`unsupported authentication request ${code}`);
      }
    } else if (m.type === 'E') {
      session.error = parseErrorFields(m.body);
      // After a FATAL error the server must close the connection, with nothing more to say.
      try {
        session.closedAfterError = (await reader.next(Date.now() + 3000)) === null;
      } catch {
        session.closedAfterError = false;
      }
      stream.destroy();
      return session;
    } else if (m.type === 'S') {
      const zero = m.body.indexOf(0);
      session.parameters.set(m.body.toString('utf8', 0, zero), m.body.toString('utf8', zero + 1, m.body.length - 1));
    } else if (m.type === 'Z') {
      session.ready = true;
      return session;
    }
    // K (BackendKeyData), N (notice), v (NegotiateProtocolVersion): nothing to do
  }
}
