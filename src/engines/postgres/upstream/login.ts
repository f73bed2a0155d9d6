// Opens an authenticated session to the target PostgreSQL with the stored credential.
// Supports trust, cleartext, md5 and SCRAM-SHA-256; optionally TLS (sslmode prefer/require).
import { createHash } from 'node:crypto';
import tls from 'node:tls';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dialer } from '../../../connector/dialer.ts';
import { ConnectorError } from '../../../connector/tunnel-server.ts';
import { Auth, Backend } from '../codec/protocol.ts';
import { decodeErrorFields, decodeParameterStatus, type ErrorFields } from '../codec/decode.ts';
import { passwordMessage, saslInitialResponse, saslResponse, sslRequest, startupMessage } from '../codec/encode.ts';
import { HandshakeReader } from '../handshake-reader.ts';
import { ScramClient } from './scram.ts';

export type TargetSslMode = 'disable' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';
export type TargetAuthMethod = 'scram-sha-256' | 'md5' | 'password' | 'none';

/** What a connection allows when it names no methods: SCRAM where a credential is stored, nothing to send otherwise. */
export function defaultRequireAuth(hasPassword: boolean): TargetAuthMethod[] {
  return hasPassword ? ['scram-sha-256'] : ['none'];
}

export interface UpstreamTarget {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string | null;
  /**
   * TLS to the target, libpq's meanings: require (encrypted, certificate not checked), verify-ca
   * (signed by `sslRootCert`), verify-full (and issued for the host). 'prefer' (from older
   * connections) is treated as require: a TLS that can be stripped protects nothing.
   */
  sslmode: TargetSslMode;
  /** CA certificate(s), PEM, for verify-ca / verify-full. */
  sslRootCert?: string;
  /** Authentication methods the target may ask for; anything else is refused before a credential leaves (libpq's require_auth). */
  requireAuth?: readonly TargetAuthMethod[];
  /** Connectors to go through (see RoutingDialer). */
  via?: string[];
  /** Client-supplied startup parameters passed through (application_name, client_encoding, options…). */
  startupParams: Record<string, string>;
}

export interface UpstreamConnection {
  stream: Duplex;
  /** The dialed stream under any TLS (a connector's tunnel stream says why it was lost). */
  transport?: Duplex;
  parameters: Map<string, string>;
  backendPid: number;
  backendSecret: Buffer;
  txStatus: number;
  tls: boolean;
  createdAt: number;
}

/** Login failed. `serverError` is for logs; clients get a generic message so nothing leaks. */
export class UpstreamLoginError extends Error {
  readonly serverError?: ErrorFields;
  /** Safe to show the client (e.g. which connector is missing); never credentials or server text. */
  readonly clientDetail?: string;
  /** The target's error is about what the client asked for (passed on as the target sent it). */
  readonly forClient: boolean;
  constructor(message: string, serverError?: ErrorFields, clientDetail?: string, forClient = false) {
    super(message);
    this.serverError = serverError;
    this.clientDetail = clientDetail;
    this.forClient = forClient && serverError !== undefined;
  }
}

const MAX_LOGIN_MESSAGE = 64 * 1024;

export async function loginUpstream(
  dialer: Dialer, target: UpstreamTarget, timeoutMs: number, saltedCache?: Map<string, Buffer>,
): Promise<UpstreamConnection> {
  const deadline = Date.now() + timeoutMs;
  let stream: Duplex;
  try {
    stream = await dialer.dial({ host: target.host, port: target.port, via: target.via }, timeoutMs);
  } catch (err) {
    throw new UpstreamLoginError(`cannot reach ${target.host}:${target.port}: ${(err as Error).message}`, undefined,
      err instanceof ConnectorError ? err.message : undefined);
  }
  const transport = stream;
  try {
    let secure = false;
    if (target.sslmode !== 'disable') {
      stream.write(sslRequest());
      const answer = await readOneByte(stream, deadline);
      if (answer !== 0x53) {
        throw new UpstreamLoginError('target does not accept TLS but the connection requires it (sslmode disable allows plaintext)', undefined,
          'the target does not accept TLS');
      }
      stream = await startTls(stream, target, deadline);
      secure = true;
    }
    const params: Record<string, string> = { ...target.startupParams, user: target.user, database: target.database };
    stream.write(startupMessage(params));
    const reader = new HandshakeReader(stream);
    try {
      const conn = await authenticate(stream, reader, target, deadline, saltedCache);
      conn.tls = secure;
      conn.transport = transport;
      const rest = reader.detach();
      if (rest.length > 0) throw new UpstreamLoginError('target sent unexpected data after ReadyForQuery');
      return conn;
    } finally {
      reader.detach();
    }
  } catch (err) {
    stream.destroy();
    if (err instanceof UpstreamLoginError) throw err;
    throw new UpstreamLoginError(`login to ${target.host}:${target.port} failed: ${(err as Error).message}`);
  }
}

async function authenticate(
  stream: Duplex, reader: HandshakeReader, target: UpstreamTarget, deadline: number, saltedCache?: Map<string, Buffer>,
): Promise<UpstreamConnection> {
  const parameters = new Map<string, string>();
  let authenticated = false;
  let sentPassword = false;
  let scram: ScramClient | null = null;
  let backendPid = 0;
  let backendSecret = Buffer.alloc(0);
  const allowed = target.requireAuth ?? defaultRequireAuth(target.password !== null);
  // Checked before anything is sent: a target (or whoever is in between) that picks a weaker
  // method than the connection allows gets nothing.
  const allow = (method: TargetAuthMethod): void => {
    if (!allowed.includes(method)) {
      throw new UpstreamLoginError(`target asks for ${method} authentication, which the connection does not allow (require-auth ${allowed.join(',')})`,
        undefined, `the target asked for ${method} authentication, which this connection does not allow`);
    }
  };
  const needPassword = (): string => {
    if (target.password === null) throw new UpstreamLoginError('target asks for a password but the connection has none stored');
    return target.password;
  };
  for (;;) {
    const { type, body } = await reader.readMessage(deadline, MAX_LOGIN_MESSAGE);
    switch (type) {
      case Backend.Authentication: {
        const code = body.readInt32BE(0);
        if (code === Auth.Ok) {
          // Without any exchange (trust): allowed only when the connection says so, or after SCRAM proved the server.
          if (!scram && !sentPassword) allow('none');
          else if (scram && !scram.verified) throw new UpstreamLoginError('target ended SCRAM without proving it knows the password (no server signature)');
          authenticated = true;
          break;
        }
        if (code === Auth.CleartextPassword) {
          allow('password');
          stream.write(passwordMessage(needPassword()));
          sentPassword = true;
        } else if (code === Auth.MD5Password) {
          allow('md5');
          stream.write(passwordMessage(md5Password(target.user, needPassword(), body.subarray(4, 8))));
          sentPassword = true;
        } else if (code === Auth.SASL) {
          allow('scram-sha-256');
          const mechanisms = body.toString('utf8', 4).split('\0').filter(Boolean);
          if (!mechanisms.includes('SCRAM-SHA-256')) throw new UpstreamLoginError(`target offers no supported SASL mechanism (${mechanisms.join(', ')})`);
          scram = new ScramClient(needPassword(), saltedCache);
          stream.write(saslInitialResponse('SCRAM-SHA-256', scram.clientFirst()));
        } else if (code === Auth.SASLContinue) {
          if (!scram) throw new UpstreamLoginError('unexpected SASL continue from target');
          stream.write(saslResponse(await scram.clientFinal(body.toString('utf8', 4))));
        } else if (code === Auth.SASLFinal) {
          if (!scram) throw new UpstreamLoginError('unexpected SASL final from target');
          scram.verifyServerFinal(body.toString('utf8', 4));
        } else {
          throw new UpstreamLoginError(`target asks for an unsupported authentication method (code ${code})`);
        }
        break;
      }
      case Backend.ParameterStatus: {
        const p = decodeParameterStatus(body, 0, body.length);
        parameters.set(p.name, p.value);
        break;
      }
      case Backend.BackendKeyData:
        backendPid = body.readInt32BE(0);
        backendSecret = Buffer.from(body.subarray(4));
        break;
      case Backend.NoticeResponse:
      case Backend.NegotiateProtocolVersion:
        break;
      case Backend.ErrorResponse: {
        const e = decodeErrorFields(body, 0, body.length);
        // After authentication the target judges what the client chose (startup parameters such
        // as options='-c no_such_guc=1'): its own error is the client's to see. Before it, or for
        // authorization and connection problems, the client gets a generic error (nothing leaks).
        const clientsOwn = authenticated && !/^(28|08|XX)/.test(e.code);
        throw new UpstreamLoginError(`target refused the login: ${e.code} ${e.message}`, e, undefined, clientsOwn);
      }
      case Backend.ReadyForQuery:
        return { stream, parameters, backendPid, backendSecret, txStatus: body[0], tls: false, createdAt: Date.now() };
      default:
        throw new UpstreamLoginError(`unexpected message 0x${type.toString(16)} from target during login`);
    }
  }
}

function md5Password(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password + user).digest('hex');
  return 'md5' + createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex');
}

function readOneByte(stream: Duplex, deadline: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error('timed out waiting for SSL answer')); }, Math.max(0, deadline - Date.now()));
    const onData = (chunk: Buffer): void => {
      cleanup();
      if (chunk.length !== 1) { reject(new Error('unexpected data after SSL answer')); return; }
      resolve(chunk[0]);
    };
    const onEnd = (): void => { cleanup(); reject(new Error('connection closed')); };
    const cleanup = (): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onEnd);
      stream.pause();
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onEnd);
  });
}

function startTls(stream: Duplex, target: UpstreamTarget, deadline: number): Promise<tls.TLSSocket> {
  const { host, sslmode } = target;
  const verify = sslmode === 'verify-ca' || sslmode === 'verify-full';
  if (verify && !target.sslRootCert) return Promise.reject(new UpstreamLoginError(`sslmode ${sslmode} needs the target's CA certificate (sslrootcert)`));
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      socket: stream, servername: net.isIP(host) ? undefined : host, minVersion: 'TLSv1.2',
      // require: encrypted, certificate not checked. verify-ca: chain to the given CA, any name.
      // verify-full: chain and name (host name or IP address), as libpq checks them.
      rejectUnauthorized: verify, ca: verify ? target.sslRootCert : undefined,
      checkServerIdentity: sslmode === 'verify-full' ? (_name, cert) => tls.checkServerIdentity(host, cert) : () => undefined,
    });
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('TLS handshake with target timed out')); }, Math.max(0, deadline - Date.now()));
    socket.once('secureConnect', () => { clearTimeout(timer); socket.off('error', reject); resolve(socket); });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(verify ? new UpstreamLoginError(`the target's TLS certificate failed verification (${sslmode}): ${err.message}`, undefined, 'the target\'s certificate failed verification') : err);
    });
  });
}
