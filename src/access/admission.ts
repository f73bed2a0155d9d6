// Admission, the one path into a session for every engine: token → connection → connect decision
// → (refusal record | session start and registration among the open sessions). Engines keep only
// their protocol's side: how a credential arrives, how a refusal is said (SQLSTATE, SSH message,
// HTTP status) and how a session is ended.
//
// Every token that does not authenticate (unknown, expired, revoked, another identity's) is
// refused with the same words to the client, "invalid token", so that a refusal tells whoever
// holds a leaked token nothing; the recording keeps the real reason.
//
// Failed sign-ins count against the client's address (auth-throttle.ts): a locked-out address is
// refused before its token is looked at ('rate-limited'), and a flood of refusals is recorded as
// a bounded number of sessions plus one summary per window instead of one session per attempt.
import type { Logger } from 'pino';
import type { Connection, ConnectionType, Identity, Store, TokenRecord } from '../store/types.ts';
import type { IdentityService } from '../identity/identity-service.ts';
import type { Recorder, SessionRecording, SessionStartInfo } from '../recorder/recorder.ts';
import type { Decision } from './access-policy.ts';
import type { SessionRegistry } from './session-registry.ts';
import { AuthThrottle, type RefusalSummary } from './auth-throttle.ts';

/** What the client is told about a token that did not authenticate, whatever the reason. */
export const INVALID_TOKEN = 'invalid token';

/** One attempt to open a session, as the engine saw it arrive. */
export interface Attempt {
  protocol: 'postgres' | 'ssh' | 'git-http';
  clientAddr: string;
  /** The client's IP address alone, when clientAddr carries more (a port): what failed sign-ins count against. */
  sourceAddr?: string;
  /** What the client calls itself (application_name, SSH client software, User-Agent); recorded for refusals too. */
  applicationName: string;
  /** The connection it asked for, by name. */
  connectionName: string;
  /** The name it gave for itself (PostgreSQL user): shown for an attempt that did not authenticate. */
  claimedName?: string;
  /** Recorded as the target database instead of the connection's (Git HTTP: the repository path). */
  targetDatabase?: string;
  /** session.start details of a refused attempt (TLS, client version, the request, …). */
  details: Record<string, unknown>;
}

/** Who signed in, and with what: what re-authorisation checks again while the session is open. */
export interface Principal {
  identity: Identity;
  /** "token", "token (password)", "publickey", …; recorded as the session's auth method. */
  authMethod: string;
  token: TokenRecord | null;
  /** SSH key sign-ins. */
  keyFingerprint?: string;
  /** The registry's change count when the credential was checked. */
  checkedAt: number;
}

export type RefusalKind = 'invalid-token' | 'rate-limited' | 'no-connection' | 'no-grant' | 'other';

export interface Refusal {
  refused: true;
  kind: RefusalKind;
  /** What the client is told (an engine may word it in its protocol's terms). */
  message: string;
  /** Why, for the recording (the end reason is `refused: <reason>`). */
  reason: string;
  access?: Decision;
  /** rate-limited: when the address may try again (HTTP Retry-After). */
  retryAfterSeconds?: number;
}

export interface Authorized { refused: false; connection: Connection; access: Decision }

export interface OpenSession {
  recording: SessionRecording;
  /** The engine calls it once the session has ended (recorded or not). */
  closed(): void;
}

export class Admission {
  private readonly store: Store;
  private readonly identity: IdentityService;
  private readonly recorder: Recorder;
  private readonly log: Logger;
  readonly sessions: SessionRegistry;
  /** Failed sign-ins per address, shared with the API's bearer-token check. */
  readonly throttle: AuthThrottle;
  private readonly summaryTimer: NodeJS.Timeout;

  constructor(deps: { store: Store; identity: IdentityService; recorder: Recorder; log: Logger; throttle?: AuthThrottle }, sessions: SessionRegistry) {
    this.store = deps.store;
    this.identity = deps.identity;
    this.recorder = deps.recorder;
    this.log = deps.log.child({ component: 'admission' });
    this.sessions = sessions;
    this.throttle = deps.throttle ?? new AuthThrottle();
    const every = Math.min(10_000, Math.max(1000, this.throttle.limits.windowMs));
    this.summaryTimer = setInterval(() => void this.recordSummaries(false), every).unref();
  }

  /** Stops the summary timer and records what is still counted (gateway shutdown). */
  async close(): Promise<void> {
    clearInterval(this.summaryTimer);
    await this.recordSummaries(true);
  }

  /**
   * The refusal for an address that is locked out (its token is not checked), or null. Engines
   * that can refuse before the credential arrives (PostgreSQL) call it early; authenticate() does too.
   */
  limited(attempt: Attempt): Refusal | null {
    const addr = sourceOf(attempt);
    const ms = this.throttle.lockedFor(addr);
    if (ms === 0) return null;
    const retryAfterSeconds = Math.ceil(ms / 1000);
    const message = `too many failed sign-ins from ${addr}: try again in ${retryAfterSeconds} s`;
    const refusal: Refusal = { refused: true, kind: 'rate-limited', message, reason: 'rate-limited: too many failed sign-ins from this address', retryAfterSeconds };
    // Debug only: a flood would write a line per attempt; the summary's warning counts them.
    this.log.debug({ client: attempt.clientAddr, connection: attempt.connectionName, retryAfterSeconds }, `${attempt.protocol} sign-in refused: address locked out`);
    if (this.throttle.rateLimited(addr).record) void this.refuse(attempt, refusal);
    else this.throttle.unrecorded(addr, attempt.protocol, { rateLimited: true, reason: refusal.reason, connection: attempt.connectionName });
    return refusal;
  }

  /**
   * Checks a presented token. `claimedIdentity`: the identity the client said it is (PostgreSQL
   * user); a token of another identity is refused. `method` qualifies the recorded reason.
   * A refusal is recorded here; `denied` adds the protocol's own fields to its access.denied event.
   */
  async authenticate(
    attempt: Attempt, token: string, o: { authMethod: string; claimedIdentity?: string; method?: string; denied?: (r: Refusal) => Record<string, unknown> },
  ): Promise<Principal | Refusal> {
    const limited = this.limited(attempt);
    if (limited) return limited;
    const checkedAt = this.sessions.changeCount;
    const check = await this.identity.checkToken(token);
    const suffix = o.method ? ` (${o.method})` : '';
    if (!check.ok) {
      return this.failedSignIn(attempt, { refused: true, kind: 'invalid-token', message: INVALID_TOKEN, reason: `token ${check.reason}${suffix}` }, { denied: o.denied });
    }
    if (o.claimedIdentity !== undefined && check.identity.name !== o.claimedIdentity) {
      return this.failedSignIn(attempt, { refused: true, kind: 'invalid-token', message: INVALID_TOKEN, reason: `token of another identity${suffix}` },
        { denied: o.denied, extra: { tokenOwner: { name: check.identity.name, kind: check.identity.kind } } });
    }
    return { identity: check.identity, authMethod: o.authMethod, token: check.token, checkedAt };
  }

  /** Counts a failed sign-in against the address; records it one by one while the window's budget lasts. */
  private async failedSignIn(attempt: Attempt, refusal: Refusal, o: Parameters<Admission['refuse']>[2]): Promise<Refusal> {
    const addr = sourceOf(attempt);
    const counted = this.throttle.failed(addr);
    if (counted.lockedOut) {
      this.log.warn({ client: addr, protocol: attempt.protocol, lockoutMs: this.throttle.limits.lockoutMs }, 'too many failed sign-ins: address locked out');
    }
    if (counted.record) return this.refuse(attempt, refusal, o);
    this.throttle.unrecorded(addr, attempt.protocol, { rateLimited: false, reason: refusal.reason, connection: attempt.connectionName });
    this.log.debug({ client: attempt.clientAddr, reason: refusal.reason }, `${attempt.protocol} sign-in refused (counted for the summary)`);
    return refusal;
  }

  /**
   * One session per summary: the refusals of a source, protocol and window that were not recorded
   * one by one, with their count. Never throws.
   */
  private async recordSummaries(all: boolean): Promise<void> {
    for (const s of this.throttle.takeSummaries(all)) {
      const total = s.failed + s.rateLimited;
      const reason = `${total} sign-in attempts from ${s.source} not recorded one by one (${s.failed} failed, ${s.rateLimited} refused while locked out)`;
      const info = this.sessionInfo({ protocol: s.protocol as Attempt['protocol'], clientAddr: s.clientAddr, applicationName: '', connectionName: s.connections[0] ?? '', details: {} });
      const details = { authenticated: false, summary: summaryDetails(s) };
      try {
        await this.recorder.recordRefusal(info, details, { message: INVALID_TOKEN, summary: summaryDetails(s) }, reason);
      } catch (err) {
        this.log.error({ err: (err as Error).message, protocol: s.protocol }, 'could not record a summary of refused attempts');
      }
      this.log.warn({ client: s.clientAddr, source: s.source, protocol: s.protocol, failed: s.failed, rateLimited: s.rateLimited }, 'sign-in attempts refused in bulk');
    }
  }

  /** An identity signed in by other means (an SSH key): nothing to refuse here. */
  principalForKey(identity: Identity, fingerprint: string): Principal {
    return { identity, authMethod: 'publickey', token: null, keyFingerprint: fingerprint, checkedAt: this.sessions.changeCount };
  }

  /** The connection named in the attempt, of the engine's type, and the connect decision on it. */
  async authorize(
    attempt: Attempt, principal: Principal, type: ConnectionType,
    o: { denied?: (r: Refusal) => Record<string, unknown>; details?: Record<string, unknown>; missing?: string } = {},
  ): Promise<Authorized | Refusal> {
    const connection = await this.store.getConnectionByName(attempt.connectionName);
    if (!connection || connection.type !== type) {
      const message = o.missing ?? `connection "${attempt.connectionName}" does not exist`;
      return this.refuse(attempt, { refused: true, kind: 'no-connection', message, reason: message }, { principal, denied: o.denied, details: o.details });
    }
    const access = await this.identity.decideConnect(principal.identity, connection);
    if (!access.allowed) {
      const message = `identity "${principal.identity.name}" has no grant on connection "${connection.name}"`;
      return this.refuse(attempt, { refused: true, kind: 'no-grant', message, reason: message, access },
        { principal, connection, denied: o.denied, details: o.details, extra: { access } });
    }
    return { refused: false, connection, access };
  }

  /**
   * Records a refused attempt: a session of its own with the attempt's start details, an
   * access.denied event (`denied` fields, then the message the client got and the reason) and
   * the end `refused: <reason>`. Never throws: a refusal goes ahead even when it cannot be recorded.
   */
  async refuse(
    attempt: Attempt, refusal: Refusal,
    o: { principal?: Principal; connection?: Connection; denied?: (r: Refusal) => Record<string, unknown>; details?: Record<string, unknown>; extra?: Record<string, unknown> } = {},
  ): Promise<Refusal> {
    const details = { ...attempt.details, ...o.details, authenticated: o.principal !== undefined };
    const denied = { message: refusal.message, ...o.denied?.(refusal), ...(refusal.reason !== refusal.message ? { reason: refusal.reason } : {}), ...o.extra };
    try {
      await this.recorder.recordRefusal(this.sessionInfo(attempt, o.principal, o.connection), details, denied, refusal.reason);
    } catch (err) {
      this.log.error({ err: (err as Error).message, protocol: attempt.protocol }, 'could not record a refused attempt');
    }
    this.log.info({ client: attempt.clientAddr, user: attempt.claimedName, connection: attempt.connectionName, identity: o.principal?.identity.name, reason: refusal.reason },
      `${attempt.protocol} connection refused`);
    return refusal;
  }

  /**
   * Starts the session's recording and registers it among the open sessions, with the engine's
   * `kill` (called when revocation, expiry, the lifetime limit or an administrator ends it).
   * Throws when the start cannot be recorded (RecordingUnavailableError): refuse the session.
   */
  async open(
    attempt: Attempt, principal: Principal, connection: Connection, details: Record<string, unknown>, kill: (reason: string) => void,
  ): Promise<OpenSession> {
    const recording = await this.recorder.startSession(this.sessionInfo(attempt, principal, connection), details);
    const closed = this.sessions.register({
      recording, identity: principal.identity, token: principal.token, keyFingerprint: principal.keyFingerprint, connection, kill,
    }, principal.checkedAt);
    return { recording, closed };
  }

  sessionInfo(attempt: Attempt, principal?: Principal, conn?: Connection): SessionStartInfo {
    const identity = principal?.identity;
    return {
      protocol: attempt.protocol,
      identityId: identity?.id ?? '', identityName: identity?.name ?? attempt.claimedName ?? '', identityKind: identity?.kind ?? 'unknown',
      clientAddr: attempt.clientAddr, applicationName: attempt.applicationName,
      connectionId: conn?.id ?? '', connectionName: conn?.name ?? attempt.connectionName,
      targetHost: conn?.host ?? '', targetPort: conn?.port ?? 0, targetDatabase: attempt.targetDatabase ?? conn?.database ?? '', targetUser: conn?.username ?? '',
      recordingMode: conn?.options.recording ?? 'durable',
      identityClaims: identity?.claims ?? null, authMethod: principal?.authMethod ?? null,
    };
  }
}

function sourceOf(attempt: Attempt): string {
  return attempt.sourceAddr ?? attempt.clientAddr;
}

function summaryDetails(s: RefusalSummary): Record<string, unknown> {
  return {
    source: s.source, failed: s.failed, rateLimited: s.rateLimited, firstAt: new Date(s.firstAt).toISOString(), lastAt: new Date(s.lastAt).toISOString(),
    reasons: s.reasons, connections: s.connections,
  };
}

export function isRefusal(r: Principal | Refusal | Authorized): r is Refusal {
  return 'refused' in r && r.refused === true;
}
