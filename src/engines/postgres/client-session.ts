// One client connection from accept to close: the startup handshake (TLS, GSSENC decline,
// cancel), token authentication, the default-deny access decision, the upstream login (pooled),
// then the recorded relay. Every refusal is an ErrorResponse with the SQLSTATE a libpq client
// expects, and refused attempts are recorded too.
import { SessionHolds } from '../../approvals/session-holds.ts';
import { policySubject } from '../../policy/policy-service.ts';
import type { StatementHolds } from './relay.ts';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { EngineContext } from '../engine.ts';
import type { Connection } from '../../store/types.ts';
import { isLoopback } from '../../util/address.ts';
import type { SessionRecording } from '../../recorder/recorder.ts';
import { INVALID_TOKEN, isRefusal, type Attempt, type OpenSession, type Principal, type Refusal as AdmissionRefusal } from '../../access/admission.ts';
import { CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE, Auth, Frontend, SqlState } from './codec/protocol.ts';
import { ProtocolError } from './codec/frame-scanner.ts';
import { decodeStartup, readCString } from './codec/decode.ts';
import {
  authenticationRequest, backendKeyData, cancelRequest, errorResponse, negotiateProtocolVersion, parameterStatus, readyForQuery,
  type ErrorInfo,
} from './codec/encode.ts';
import { DEFAULT_MAX_HANDSHAKE_BYTES, HandshakeReader, HandshakeTimeout } from './handshake-reader.ts';
import { loginUpstream, UpstreamLoginError, type UpstreamConnection } from './upstream/login.ts';
import { UpstreamPool } from './upstream/pool.ts';
import type { CancelRegistry } from './cancel-registry.ts';
import { Relay, type RelayEnd } from './relay.ts';
import { StatementTracker } from './statement-tracker.ts';
import type { CatalogLookups } from './upstream/catalog.ts';
import type { ColumnNameSource } from './masking/result-masker.ts';
import { maskingKey } from '../../masking/detectors.ts';
import { tunnelLossReason } from '../../connector/tunnel-server.ts';

export interface PgEngineOptions {
  authTimeoutMs: number;
  upstreamTimeoutMs: number;
  maxClientMessageBytes: number;
  maxServerMessageBytes: number;
  paramBytes: number;
  /** Statement text kept in the record; a longer statement keeps its first bytes, length and SHA-256. */
  recordedTextBytes: number;
  /** Accept cleartext tokens without TLS from loopback clients (local development, CI). */
  allowLoopbackCleartext: boolean;
}

export interface PgSessionDeps {
  ctx: EngineContext;
  options: PgEngineOptions;
  pool: UpstreamPool;
  cancels: CancelRegistry;
  secureContext: tls.SecureContext;
  saltedCache: Map<string, Buffer>;
  /** Catalog lookups on the gateway's own upstream connections (function names for FunctionCall). */
  catalog: CatalogLookups;
}

/** After a session-ending error: how long the client's input must pause before the close, and at most. */
const FAIL_QUIET_MS = 200;
const FAIL_DRAIN_MAX_MS = 10_000;

/** Startup parameters the gateway decides itself or that would change the session's nature. */
const RESERVED_PARAMS = new Set(['user', 'database', 'replication']);

class Refusal extends Error {
  readonly info: ErrorInfo;
  constructor(info: ErrorInfo) {
    super(info.message);
    this.info = { severity: 'FATAL', ...info };
  }
}

export class PgClientSession {
  private readonly socket: net.Socket;
  private readonly deps: PgSessionDeps;
  private readonly log: Logger;
  private stream: Duplex;
  private secure = false;
  private relay: Relay | null = null;
  private stopReason: string | null = null;
  private readonly clientAddr: string;

  constructor(socket: net.Socket, deps: PgSessionDeps) {
    this.socket = socket;
    this.stream = socket;
    this.deps = deps;
    this.clientAddr = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.log = deps.ctx.log.child({ client: this.clientAddr });
  }

  /** Asks a running session to end (gateway shutdown, revocation, an administrator): the client gets 57P01. */
  stop(reason: string): void {
    this.stopReason = reason;
    if (this.relay) this.relay.stop(reason);
    else this.stream.destroy();
  }

  async run(): Promise<void> {
    this.socket.setNoDelay(true);
    let reader = new HandshakeReader(this.stream, DEFAULT_MAX_HANDSHAKE_BYTES, this.onFlood);
    const deadline = Date.now() + this.deps.options.authTimeoutMs;
    try {
      const startup = await this.negotiate(reader, deadline, (r) => { reader = r; });
      if (!startup) return; // a cancel request, answered and closed
      await this.serve(reader, startup, deadline);
    } catch (err) {
      if (err instanceof ProtocolError) {
        this.log.info({ err: err.message }, 'postgres client protocol error during handshake');
        this.fail({ code: err.sqlState, message: err.message });
      } else if (err instanceof HandshakeTimeout) {
        this.fail({ code: SqlState.ProtocolViolation, message: err.message });
      } else if (err instanceof Refusal) {
        this.fail(err.info);
      } else if (!this.stream.destroyed) {
        this.log.warn({ err: (err as Error).message }, 'postgres session failed');
        this.fail({ code: SqlState.InternalError, message: 'internal gateway error' });
      }
    } finally {
      reader.detach();
    }
  }

  private fail(info: ErrorInfo): void {
    const stream = this.stream;
    if (stream.destroyed || this.failing) return;
    this.failing = true;
    stream.write(errorResponse({ severity: 'FATAL', ...info }));
    // A client may still be sending (a message over the limit): closing now would make its write
    // fail before it reads the error (libpq reports a lost connection instead). Read and drop
    // its input until it pauses, then close; bounded in time.
    let close: NodeJS.Timeout;
    const closeSoon = (): void => { clearTimeout(close); close = setTimeout(shut, FAIL_QUIET_MS).unref(); };
    const shut = (): void => {
      clearTimeout(close);
      clearTimeout(limit);
      stream.off('data', closeSoon);
      stream.end();
      setTimeout(() => stream.destroy(), 1000).unref();
    };
    const limit = setTimeout(shut, FAIL_DRAIN_MAX_MS).unref();
    stream.on('data', closeSoon);
    stream.resume();
    closeSoon();
  }

  private failing = false;

  /** The client sent more than the handshake can use while the gateway was busy (say, logging in to the target). */
  private readonly onFlood = (err: ProtocolError): void => {
    this.log.info({ err: err.message }, 'postgres client flooded the handshake');
    this.fail({ code: err.sqlState, message: err.message });
  };

  /** SSLRequest / GSSENCRequest / CancelRequest loop until a real StartupMessage arrives. */
  private async negotiate(
    initial: HandshakeReader, deadline: number, setReader: (r: HandshakeReader) => void,
  ): Promise<{ protocol: number; params: Map<string, string> } | null> {
    let reader = initial;
    for (;;) {
      if (!this.secure && (await reader.peekByte(deadline)) === 0x16) {
        // PostgreSQL 17 "direct" TLS: a ClientHello instead of SSLRequest.
        reader = await this.upgradeTls(reader, true);
        setReader(reader);
        continue;
      }
      const body = await reader.readStartupPacket(deadline);
      const code = body.readInt32BE(0);
      if (code === SSL_REQUEST_CODE) {
        if (this.secure) throw new ProtocolError('SSLRequest received on an encrypted connection');
        // Bytes sent before the TLS handshake would be trusted as if encrypted (CVE-2021-23214).
        if (reader.pendingBytes > 0) throw new ProtocolError('unexpected data after SSLRequest');
        this.stream.write('S');
        reader = await this.upgradeTls(reader, false);
        setReader(reader);
        continue;
      }
      if (code === GSSENC_REQUEST_CODE) {
        if (reader.pendingBytes > 0) throw new ProtocolError('unexpected data after GSSENCRequest');
        this.stream.write('N');
        continue;
      }
      if (code === CANCEL_REQUEST_CODE) {
        this.handleCancel(body);
        return null;
      }
      if (code >> 16 !== 3) {
        throw new ProtocolError(`unsupported frontend protocol ${code >> 16}.${code & 0xffff}: the gateway speaks 3.0`, SqlState.FeatureNotSupported);
      }
      return decodeStartup(body, 0, body.length);
    }
  }

  private async upgradeTls(reader: HandshakeReader, direct: boolean): Promise<HandshakeReader> {
    const pending = reader.detach();
    const secureSocket = new tls.TLSSocket(this.socket, {
      isServer: true, secureContext: this.deps.secureContext, ALPNProtocols: direct ? ['postgresql'] : undefined,
    });
    if (pending.length > 0) this.socket.unshift(pending);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new HandshakeTimeout()), this.deps.options.authTimeoutMs);
      secureSocket.once('secure', () => { clearTimeout(timer); resolve(); });
      secureSocket.once('error', (err) => { clearTimeout(timer); reject(new ProtocolError(`TLS handshake failed: ${err.message}`)); });
    });
    if (direct && secureSocket.alpnProtocol !== 'postgresql') {
      throw new ProtocolError('direct TLS connections must negotiate ALPN "postgresql"');
    }
    this.stream = secureSocket;
    this.secure = true;
    return new HandshakeReader(secureSocket, DEFAULT_MAX_HANDSHAKE_BYTES, this.onFlood);
  }

  private handleCancel(body: Buffer): void {
    if (body.length < 12) {
      this.stream.destroy();
      return;
    }
    const target = this.deps.cancels.lookup(body.readInt32BE(4), body.subarray(8));
    target?.cancel();
    // The protocol gives the canceller no answer either way: just close.
    this.stream.end();
  }

  private async serve(reader: HandshakeReader, startup: { protocol: number; params: Map<string, string> }, deadline: number): Promise<void> {
    const { ctx } = this.deps;
    const params = startup.params;
    const user = params.get('user');
    if (!user) throw new Refusal({ code: SqlState.InvalidAuthorization, message: 'no PostgreSQL user name specified in startup packet' });
    const database = params.get('database') || user;
    const unsupported = [...params.keys()].filter((k) => k.startsWith('_pq_.'));
    if ((startup.protocol & 0xffff) > 0 || unsupported.length > 0) this.stream.write(negotiateProtocolVersion(0, unsupported));
    const attempt: Attempt = {
      protocol: 'postgres', clientAddr: this.clientAddr, sourceAddr: this.socket.remoteAddress, applicationName: params.get('application_name') ?? '',
      connectionName: database, claimedName: user, details: { tls: this.secure },
    };
    if (params.has('replication') && params.get('replication') !== 'false' && params.get('replication') !== '0') {
      throw new Refusal({ code: SqlState.FeatureNotSupported, message: 'replication connections are not supported through the gateway' });
    }

    if (!this.secure && !(this.deps.options.allowLoopbackCleartext && isLoopback(this.socket.remoteAddress))) {
      await this.refuse(attempt, { code: SqlState.InvalidAuthorization, message: 'the gateway accepts tokens only over TLS', hint: 'connect with sslmode=require' });
    }

    // A locked-out address is refused before it is asked for its token.
    const limited = ctx.admission.limited(attempt);
    if (limited) throw new Refusal(refusalInfo(limited, user));
    // Authenticate: the token travels as a cleartext password, protected by TLS.
    this.stream.write(authenticationRequest(Auth.CleartextPassword));
    const msg = await reader.readMessage(deadline, 16 * 1024);
    if (msg.type !== Frontend.Password) throw new ProtocolError(`expected a password message, got 0x${msg.type.toString(16)}`);
    const token = readCString(msg.body, 0, msg.body.length).value;
    const signedIn = await ctx.admission.authenticate(attempt, token, { authMethod: 'token', claimedIdentity: user, denied: (r) => errorFields(refusalInfo(r, user)) });
    if (isRefusal(signedIn)) throw new Refusal(refusalInfo(signedIn, user));
    const principal: Principal = signedIn;
    const identity = principal.identity;
    const authorized = await ctx.admission.authorize(attempt, principal, 'postgres', { denied: (r) => errorFields(refusalInfo(r, user)) });
    if (isRefusal(authorized)) throw new Refusal(refusalInfo(authorized, user));
    const { connection: conn, access } = authorized;

    const startupParams: Record<string, string> = {};
    for (const [k, v] of params) if (!RESERVED_PARAMS.has(k) && !k.startsWith('_pq_.')) startupParams[k] = v;
    const poolKey = UpstreamPool.key(conn.id, startupParams);
    let upstream = this.deps.pool.take(poolKey);
    const pooled = upstream !== undefined;
    if (!upstream) {
      try {
        upstream = await this.loginTarget(conn, startupParams);
      } catch (err) {
        const reason = err instanceof UpstreamLoginError ? err.message : (err as Error).message;
        this.log.warn({ connection: conn.name, err: reason }, 'upstream login failed');
        const detail = err instanceof UpstreamLoginError ? err.clientDetail : undefined;
        const own = err instanceof UpstreamLoginError && err.forClient ? err.serverError! : null;
        const refusal = own
          ? { code: own.code, message: own.message, detail: own.detail, hint: own.hint }
          : { code: SqlState.ConnectionFailure, message: `could not connect to the target of connection "${conn.name}"`, detail };
        await this.refuse(attempt, refusal,
          { principal, connection: conn, reason: `upstream login failed: ${reason}` });
      }
    }
    const up = upstream as UpstreamConnection;
    if (this.failing) { up.stream.destroy(); return; } // the client was cut off meanwhile (onFlood)

    let recording: SessionRecording;
    let open: OpenSession;
    try {
      // Revocation, expiry, the lifetime limit or an administrator end it as a shutdown does:
      // 57P01, and a running statement is cancelled on the target (below, once the relay stops).
      open = await ctx.admission.open(attempt, principal, conn, {
        startupParams, tls: this.secure, upstream: { pid: up.backendPid, tls: up.tls, pooled }, access,
      }, (reason) => this.stop(reason));
      recording = open.recording;
    } catch (err) {
      up.stream.destroy();
      this.log.error({ err: (err as Error).message }, 'cannot record session start; refusing');
      throw new Refusal({ code: SqlState.CannotConnectNow, message: 'the gateway cannot record sessions right now; refusing to connect' });
    }

    const cancelKey = this.deps.cancels.register({
      cancel: () => {
        recording.append('cancel', { upstreamPid: up.backendPid });
        // A held statement has not reached the target: withdrawing it is the cancel.
        if (this.relay?.cancelHolds()) return;
        void this.sendUpstreamCancel(conn, up);
      },
    });
    try {
      const out: Buffer[] = [authenticationRequest(Auth.Ok)];
      for (const [name, value] of up.parameters) out.push(parameterStatus(name, value));
      out.push(backendKeyData(cancelKey.pid, cancelKey.secret), readyForQuery(up.txStatus));
      this.stream.write(Buffer.concat(out));
      this.log.info({ session: recording.id, identity: identity.name, connection: conn.name, pooled }, 'postgres session started');

      const tracker = new StatementTracker(recording, {
        sampleRows: ctx.recorder.options.sampleRows, sampleBytes: ctx.recorder.options.sampleBytes, paramBytes: this.deps.options.paramBytes,
        textBytes: this.deps.options.recordedTextBytes,
      }, up.parameters, {
        resolveFunction: (oid) => this.deps.catalog.functionName(conn.id, () => this.loginTarget(conn, {}), oid),
      });
      tracker.txStatus = up.txStatus;
      const leftover = reader.detach();
      // Who and where are fixed for the session; the relay asks the policy about each statement.
      const policy = ctx.policy.forSession(await policySubject(ctx.identity.access, identity), { connection: conn.name, type: conn.type });
      // A held statement waits here for people to decide; its request and decision are on record.
      const sessionHolds = new SessionHolds(ctx.approvals, recording, { requester: identity, connection: { id: conn.id, name: conn.name }, protocol: 'postgres' });
      const holds: StatementHolds = { hold: (verdict, text) => sessionHolds.hold(verdict, { kind: 'sql', text }) };
      // Result masking asks the target's catalog, on the gateway's own connection, what a column is.
      const catalogLogin = (): Promise<UpstreamConnection> => this.loginTarget(conn, {});
      const catalog = this.deps.catalog;
      const names: ColumnNameSource = {
        peek: (oid, attnum) => catalog.peekColumn(conn.id, catalogLogin, oid, attnum),
        resolve: (keys) => catalog.resolveColumns(conn.id, catalogLogin, keys),
        relation: (schema, relation, columns) => catalog.relationColumns(conn.id, catalogLogin, schema, relation, columns),
        peekType: (oid) => catalog.peekType(conn.id, catalogLogin, oid),
        resolveTypes: (oids) => catalog.resolveTypes(conn.id, catalogLogin, oids),
        forget: () => catalog.forgetColumns(conn.id),
      };
      this.relay = new Relay(this.stream, up.stream, tracker, {
        maxClientMessageBytes: this.deps.options.maxClientMessageBytes, maxServerMessageBytes: this.deps.options.maxServerMessageBytes,
        recordBeforeForward: conn.options.recording !== 'best-effort', policy, holds,
        masking: { names, key: maskingKey(ctx.secrets.derive('masking')) },
      });
      if (this.stopReason) this.relay.stop(this.stopReason);
      this.relay.start(leftover);
      const end = await this.relay.done;
      // Ended by the gateway (shutdown, revocation, kill) while a statement runs: cancel it on
      // the target, as PostgreSQL's own fast shutdown does, instead of leaving it running.
      if (end.kind === 'stopped' && tracker.outstanding > 0) await this.sendUpstreamCancel(conn, up);
      await this.finish(end, tracker, recording, up, poolKey);
    } finally {
      this.deps.cancels.unregister(cancelKey.pid);
      open.closed();
    }
  }

  /** Logs in to the connection's target with its stored credential. */
  private loginTarget(conn: Connection, startupParams: Record<string, string>): Promise<UpstreamConnection> {
    const ctx = this.deps.ctx;
    return loginUpstream(ctx.dialer, {
      host: conn.host, port: conn.port, database: conn.database, user: conn.username,
      password: conn.sealedSecret ? ctx.secrets.open(conn.sealedSecret, conn.id) : null,
      sslmode: conn.options.sslmode ?? (conn.options.sslRootCert ? 'verify-full' : 'require'), sslRootCert: conn.options.sslRootCert,
      requireAuth: conn.options.requireAuth, startupParams, via: conn.options.via,
    }, this.deps.options.upstreamTimeoutMs, this.deps.saltedCache);
  }

  private async finish(end: RelayEnd, tracker: StatementTracker, recording: SessionRecording, up: UpstreamConnection, poolKey: string): Promise<void> {
    const reusable = this.relay?.reusable === true && (end.kind === 'client-terminated' || end.kind === 'client-closed');
    let reason: string;
    switch (end.kind) {
      case 'client-terminated': reason = 'client terminated'; break;
      case 'client-closed': reason = 'client disconnected'; break;
      case 'upstream-closed': {
        const lost = tunnelLossReason(up.transport ?? up.stream);
        reason = end.fatal ? `target ended the session: ${end.fatal}` : lost ? `connection to the target lost: ${lost}` : 'target closed the connection';
        // The target said goodbye itself (its FATAL was relayed); otherwise say what happened.
        // An ErrorResponse cannot follow half a message: then the client just sees the close.
        if (!end.fatal && this.relay?.serverAtBoundary !== false) {
          this.fail({ code: SqlState.ConnectionFailure, message: lost ? `connection to the target was lost (${lost})` : 'the target closed the connection' });
        } else if (!end.fatal) {
          this.stream.destroy();
        }
        break;
      }
      case 'client-protocol-error':
        reason = `client protocol violation: ${end.error.message}`;
        this.fail({ code: end.error.sqlState, message: end.error.message });
        break;
      case 'upstream-protocol-error':
        reason = `target protocol violation: ${end.error.message}`;
        this.fail({ code: SqlState.ProtocolViolation, message: 'the target sent a malformed message' });
        break;
      case 'recording-failed':
        reason = `recording failed: ${end.error.message}`;
        this.fail({ code: SqlState.CannotConnectNow, message: 'the gateway cannot record statements right now; the session is closed and the statement was not sent' });
        break;
      case 'stopped':
        reason = end.reason;
        // An ErrorResponse cannot follow half a message: then the client just sees the close.
        if (this.relay?.serverAtBoundary !== false) this.fail({ code: SqlState.AdminShutdown, message: `terminating connection: ${end.reason}` });
        else this.stream.destroy();
        break;
    }
    tracker.abandon(reason);
    if (up.txStatus !== tracker.txStatus) up.txStatus = tracker.txStatus;
    if (end.kind !== 'client-protocol-error' && end.kind !== 'upstream-protocol-error' && end.kind !== 'recording-failed' && end.kind !== 'stopped') {
      this.stream.end();
    }
    const ended = recording.end(reason).catch((err: unknown) => {
      this.log.error({ session: recording.id, err: (err as Error).message }, 'could not record session end');
    });
    if (reusable) await this.deps.pool.release(poolKey, up);
    else up.stream.destroy();
    await ended;
    this.log.info({ session: recording.id, reason, reused: reusable }, 'postgres session ended');
  }

  private async sendUpstreamCancel(conn: Connection, up: UpstreamConnection): Promise<void> {
    try {
      const stream = await this.deps.ctx.dialer.dial({ host: conn.host, port: conn.port, via: conn.options.via }, this.deps.options.upstreamTimeoutMs);
      stream.on('error', () => {});
      stream.end(cancelRequest(up.backendPid, up.backendSecret));
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not forward cancel request');
    }
  }

  /** Records the refused attempt (who tried what, and why it was refused), then refuses with `info`. */
  private async refuse(attempt: Attempt, info: ErrorInfo, o: { principal?: Principal; connection?: Connection; reason?: string } = {}): Promise<never> {
    const reason = o.reason ?? info.message;
    await this.deps.ctx.admission.refuse(attempt, { refused: true, kind: 'other', message: info.message, reason },
      { principal: o.principal, connection: o.connection, denied: () => errorFields(info) });
    throw new Refusal(info);
  }
}

/** How an admission refusal reads to a libpq client: every invalid token alike, 28P01. */
function refusalInfo(r: AdmissionRefusal, user: string): ErrorInfo {
  switch (r.kind) {
    case 'invalid-token': return { code: SqlState.InvalidPassword, message: `password authentication failed for user "${user}"`, detail: INVALID_TOKEN };
    case 'no-connection': return { code: SqlState.InvalidCatalogName, message: r.message };
    case 'rate-limited': return { code: SqlState.InvalidAuthorization, message: r.message, detail: 'sign-ins from this address are refused for a while, valid tokens included', hint: 'wait, then connect again' };
    case 'no-grant': {
      const connection = /connection "([^"]*)"/.exec(r.message)?.[1] ?? 'CONNECTION';
      return { code: SqlState.InvalidAuthorization, message: r.message, hint: `ask for it: gatehouse access request ${connection} --for 1h --reason "…"` };
    }
    default: return { code: SqlState.InvalidAuthorization, message: r.message };
  }
}

/** The ErrorResponse fields as recorded in access.denied. */
function errorFields(info: ErrorInfo): Record<string, unknown> {
  return { code: info.code, message: info.message, ...(info.detail ? { detail: info.detail } : {}), ...(info.hint ? { hint: info.hint } : {}) };
}
