// Admission, the one path into a session for every engine: token → connection → connect decision
// → (refusal record | session start and registration among the open sessions). Engines keep only
// their protocol's side: how a credential arrives, how a refusal is said (SQLSTATE, SSH message,
// HTTP status) and how a session is ended.
//
// Every token that does not authenticate (unknown, expired, revoked, another identity's) is
// refused with the same words to the client, "invalid token", so that a refusal tells whoever
// holds a leaked token nothing; the recording keeps the real reason.
import type { Logger } from 'pino';
import type { Connection, ConnectionType, Identity, Store, TokenRecord } from '../store/types.ts';
import type { IdentityService } from '../identity/identity-service.ts';
import type { Recorder, SessionRecording, SessionStartInfo } from '../recorder/recorder.ts';
import type { Decision } from './access-policy.ts';
import type { SessionRegistry } from './session-registry.ts';

/** What the client is told about a token that did not authenticate, whatever the reason. */
export const INVALID_TOKEN = 'invalid token';

/** One attempt to open a session, as the engine saw it arrive. */
export interface Attempt {
  protocol: 'postgres' | 'ssh' | 'git-http';
  clientAddr: string;
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

export type RefusalKind = 'invalid-token' | 'no-connection' | 'no-grant' | 'other';

export interface Refusal {
  refused: true;
  kind: RefusalKind;
  /** What the client is told (an engine may word it in its protocol's terms). */
  message: string;
  /** Why, for the recording (the end reason is `refused: <reason>`). */
  reason: string;
  access?: Decision;
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

  constructor(deps: { store: Store; identity: IdentityService; recorder: Recorder; log: Logger }, sessions: SessionRegistry) {
    this.store = deps.store;
    this.identity = deps.identity;
    this.recorder = deps.recorder;
    this.log = deps.log.child({ component: 'admission' });
    this.sessions = sessions;
  }

  /**
   * Checks a presented token. `claimedIdentity`: the identity the client said it is (PostgreSQL
   * user); a token of another identity is refused. `method` qualifies the recorded reason.
   * A refusal is recorded here; `denied` adds the protocol's own fields to its access.denied event.
   */
  async authenticate(
    attempt: Attempt, token: string, o: { authMethod: string; claimedIdentity?: string; method?: string; denied?: (r: Refusal) => Record<string, unknown> },
  ): Promise<Principal | Refusal> {
    const checkedAt = this.sessions.changeCount;
    const check = await this.identity.checkToken(token);
    const suffix = o.method ? ` (${o.method})` : '';
    if (!check.ok) {
      return this.refuse(attempt, { refused: true, kind: 'invalid-token', message: INVALID_TOKEN, reason: `token ${check.reason}${suffix}` }, { denied: o.denied });
    }
    if (o.claimedIdentity !== undefined && check.identity.name !== o.claimedIdentity) {
      return this.refuse(attempt, { refused: true, kind: 'invalid-token', message: INVALID_TOKEN, reason: `token of another identity${suffix}` },
        { denied: o.denied, extra: { tokenOwner: { name: check.identity.name, kind: check.identity.kind } } });
    }
    return { identity: check.identity, authMethod: o.authMethod, token: check.token, checkedAt };
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

export function isRefusal(r: Principal | Refusal | Authorized): r is Refusal {
  return 'refused' in r && r.refused === true;
}
