// The gateway's persistent state. Engines and the API never touch SQL directly: they go through
// this interface so that the embedded SQLite store and a shared PostgreSQL store are swappable.

export type IdentityKind = 'human' | 'service' | 'agent';
export const IDENTITY_KINDS: readonly IdentityKind[] = ['human', 'service', 'agent'];

export interface Identity {
  id: string;
  name: string;
  kind: IdentityKind;
  isAdmin: boolean;
  createdAt: number; // ms since epoch
  /** Workload identities: the verified claims of the OIDC token it was exchanged for. */
  claims?: IdentityClaims;
  /** How a workload identity came to be, e.g. "oidc-exchange:<policy>"; absent when an administrator made it. */
  authSource?: string;
  /**
   * Groups the identity carries from outside the gateway (a run identity: its trust policy's
   * groups). Grants to groups of these names apply to it, as do grants to groups it is a member of.
   */
  externalGroups?: string[];
}

/** Claim name → value, every value as a string (numbers and booleans as their JSON text). */
export type IdentityClaims = Record<string, string>;

export interface TokenRecord {
  id: string;
  identityId: string;
  tokenHash: string;
  createdAt: number;
  expiresAt: number;
  revokedAt: number | null;
}

export type ConnectionType = 'postgres' | 'ssh' | 'git-http';
export const CONNECTION_TYPES: readonly ConnectionType[] = ['postgres', 'ssh', 'git-http'];

export interface Connection {
  id: string;
  name: string;
  type: ConnectionType;
  host: string;
  port: number;
  database: string;
  username: string;
  /** AES-256-GCM sealed credential; null when the target needs none (trust auth). */
  sealedSecret: Buffer | null;
  options: ConnectionOptions;
  createdAt: number;
}

export interface ConnectionOptions {
  /**
   * Upstream TLS (libpq's names): disable, require, verify-ca, verify-full. Default: verify-full
   * when sslRootCert is set, require otherwise. 'prefer' (older connections) counts as require.
   */
  sslmode?: 'disable' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';
  /** PEM CA certificate(s) the target's certificate must chain to (verify-ca, verify-full). */
  sslRootCert?: string;
  /** Authentication methods the target may ask for (default: scram-sha-256 with a stored credential, none without). */
  requireAuth?: Array<'scram-sha-256' | 'md5' | 'password' | 'none'>;
  /**
   * durable (default): a statement is sent only once its record is committed, and is refused
   * when the store cannot write. best-effort: statements are sent at once and recorded as soon
   * as the store allows; every session of the connection says so.
   */
  recording?: 'durable' | 'best-effort';
  /** Connectors whose tunnels reach the target (any healthy one is used); absent: dial directly. */
  via?: string[];
  /** Recordings of this connection's sessions are removed this long after they end (seconds). */
  retentionSeconds?: number;
  /** Sessions are ended this long after they start (seconds), whatever their token's lifetime. */
  maxSessionSeconds?: number;
  /** ssh: the target's host key, pinned at registration ("ssh-ed25519 AAAA…"); any other key refuses the session. */
  hostKey?: string;
  /** ssh: how the stored credential is used (a private key or a password). */
  sshAuth?: 'key' | 'password';
  /** ssh: what may be forwarded (all refused by default). */
  allowForwarding?: Array<'local' | 'remote' | 'agent'>;
  /** ssh: environment variables a client may set (globs; GIT_PROTOCOL, LANG and LC_* by default). */
  allowEnv?: string[];
  /** git (ssh and git-http): refs that may not be deleted or rewritten (globs). */
  protect?: string[];
  /**
   * ssh: nothing but recognised Git service requests (git-upload-pack, git-receive-pack,
   * git-upload-archive) may run; shells, other commands, SFTP and forwarding are refused.
   * Without it, ref protection is advisory: a shell can change refs behind the gateway's back.
   */
  gitOnly?: boolean;
  /** git-http: the target's scheme and path prefix, e.g. https + /git. */
  tls?: boolean;
  basePath?: string;
}

/** What a grant allows on a connection (docs/access.md). */
export type AccessAction = 'connect' | 'approve' | 'audit' | 'admin';
export const ACCESS_ACTIONS: readonly AccessAction[] = ['connect', 'approve', 'audit', 'admin'];

/** Group names: IdP-friendly (spaces, = and , inside), no control characters, at most 128. */
export const GROUP_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9 ._@:/+=,-]{0,126}[A-Za-z0-9._@:/+=,-])?$/;

export interface GroupRecord { id: string; name: string; createdAt: number }

export interface GroupMember { groupId: string; groupName: string; identityId: string; identityName: string; createdAt: number }

/** An action granted to an identity or a group, on one connection or (connectionId null) on all. */
export interface AccessGrant {
  id: string;
  subjectType: 'identity' | 'group';
  subjectId: string;
  /** The identity's or group's name (filled in on reads). */
  subjectName: string;
  action: AccessAction;
  connectionId: string | null;
  /** Filled in on reads; null with connectionId null (every connection). */
  connectionName: string | null;
  createdAt: number;
  /** A just-in-time grant ends by itself then (ms); null: until removed. */
  expiresAt: number | null;
}

export type NewAccessGrant = Omit<AccessGrant, 'subjectName' | 'connectionName' | 'expiresAt'>;

/**
 * A person's sign-in through an identity provider, from `gatehouse login` starting it until the
 * CLI collects its token (docs/sso.md). Kept in the store so that any gateway sharing it can
 * finish a sign-in another one started.
 */
export interface PendingLogin {
  /** Random; the sign-in link is <public_url>/login/<id>. */
  id: string;
  /** SHA-256 of the secret the CLI polls with. */
  pollTokenHash: string;
  /** Short code shown in the terminal and on the browser pages ("BDFH-KMPR"). */
  userCode: string;
  provider: string;
  protocol: 'oidc' | 'saml';
  /** OIDC: the state parameter; SAML: the AuthnRequest ID (the answer's InResponseTo). */
  state: string;
  /** OIDC: PKCE verifier and nonce (JSON); never leaves the gateway. */
  secret: string;
  createdAt: number;
  expiresAt: number;
  status: PendingLoginStatus;
  /** Signed in (and collected): who. */
  identityId: string | null;
  /** Refused: why (shown in the browser and to the CLI). */
  error: string | null;
  /** Where `gatehouse login` ran: its address as the gateway saw it, and the host name it claims. */
  startedFrom: string | null;
  startedHost: string | null;
  /** Signed in: SHA-256 of the secret of the confirmation form the person's browser was shown. */
  confirmHash: string | null;
  /** When the person entered the terminal's code in that browser; the token is released only after. */
  confirmedAt: number | null;
  /** Wrong codes entered so far (the sign-in is refused after a few). */
  codeFailures: number;
}

/** signed-in: the provider vouched for the person; the token waits for confirmedAt. */
export type PendingLoginStatus = 'pending' | 'signed-in' | 'refused' | 'collected';

export type PendingLoginKey = { id: string } | { userCode: string } | { pollTokenHash: string } | { state: string };

/** An SSH public key registered to an identity (client authentication on the SSH listener). */
export interface PublicKeyRecord {
  id: string;
  identityId: string;
  /** "SHA256:…" as OpenSSH prints it; unique. */
  fingerprint: string;
  /** The key line as registered: "ssh-ed25519 AAAA… comment". */
  publicKey: string;
  createdAt: number;
}

/** A connector: a small agent next to private resources that dials out to the gateway. */
export interface ConnectorRecord {
  id: string;
  name: string;
  createdAt: number;
  /** Single-use enrollment token (hash) and its expiry; cleared once used. */
  enrollmentTokenHash: string | null;
  enrollmentExpiresAt: number | null;
  enrolledAt: number | null;
  /** Serial number of the client certificate the gateway's CA issued at enrollment. */
  certSerial: string | null;
  revokedAt: number | null;
}

export interface SessionRow {
  id: string;
  protocol: string;
  identityId: string;
  identityName: string;
  /** 'unknown' only on refused attempts whose token did not authenticate. */
  identityKind: IdentityKind | 'unknown';
  clientAddr: string;
  applicationName: string;
  connectionId: string;
  connectionName: string;
  targetHost: string;
  targetPort: number;
  targetDatabase: string;
  targetUser: string;
  /** durable: record before forward; best-effort: the connection opted out of waiting. */
  recordingMode: 'durable' | 'best-effort';
  startedAt: number; // µs since epoch
  endedAt: number | null;
  endReason: string | null;
  eventCount: number;
  /** Under legal hold: never removed by retention. */
  legalHold?: boolean;
  /** What the session's review found once it ended (search-text.ts): absent when nothing. */
  reviewFlags?: Array<'denied' | 'held' | 'flagged' | 'lost' | 'masked'>;
  /** A copy of the identity's claims at session start (recordings keep them after the identity is gone); null for identities without claims. */
  identityClaims?: IdentityClaims | null;
  /** How the session authenticated at the gateway: "token", "publickey", "token (password)", …; null when it did not. */
  authMethod?: string | null;
  /**
   * The gateway that owns the session (filled in on reads): the one recording it, or the one that
   * took it over to seal it. '' for sessions recorded before sessions had owners.
   */
  gatewayId?: string;
}

/** One entry of the admin audit log (src/audit/admin-audit.ts): a chained, signed event. */
export interface AuditEntryRow {
  gatewayId: string;
  seq: number;
  ts: number; // µs since epoch
  type: string;
  data: string; // JSON
  /** Chain hash over this entry and the previous one's hash (src/integrity/hash-chain.ts). */
  hash: string;
  keyId: string;
  /** Signature over the entry's signed head (src/integrity/audit-chain.ts). */
  signature: string;
}

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'withdrawn';

/** An action held by a policy rule until people approve it (src/approvals/). */
export interface ApprovalRow {
  id: string;
  status: ApprovalStatus;
  /** The gateway holding the action (it forwards or refuses it when decided). */
  gatewayId: string;
  sessionId: string;
  requesterId: string;
  requesterName: string;
  requesterKind: string;
  requesterClaims: IdentityClaims | null;
  connectionId: string;
  connectionName: string;
  protocol: string;
  rule: string;
  policyVersion: number;
  /** What would run, as the policy saw it (JSON of a PolicyAction). */
  action: string;
  /** Who may approve besides identities with the approve grant on the connection (JSON). */
  approvers: string;
  quorum: number;
  /** JSON array of { by, decision, reason, at }. */
  decisions: string;
  /** Why it ended (the denying approver's reason, the timeout…). */
  reason: string | null;
  createdAt: number;
  expiresAt: number;
  decidedAt: number | null;
}

/** One applied policy (docs/policy.md). */
export interface PolicyVersion {
  version: number;
  /** SHA-256 (hex) of `document`. */
  hash: string;
  /** The checked rules, canonical JSON: what decides. */
  document: string;
  /** The YAML as the operator applied it (comments included), for `policy show`. */
  source: string;
  /** Name of the identity that applied it. */
  appliedBy: string;
  appliedAt: number;
}

export type PolicyVersionInfo = Omit<PolicyVersion, 'document' | 'source'>;

export interface EventRow {
  sessionId: string;
  seq: number;
  ts: number; // µs since epoch
  type: string;
  data: string; // JSON
  /** SHA-256 chain hash (see src/integrity/hash-chain.ts). */
  hash: string;
}

/** A signed statement of a session's chain head at some point (see docs/bundle.md). */
export interface CheckpointRow { sessionId: string; seq: number; payload: string; keyId: string; signature: string }

/** A sealed session: its final head, signed, and linked to the previous seal (position − 1). */
export interface SealRow { gatewayId: string; position: number; sessionId: string; payload: string; hash: string; keyId: string; signature: string }

export interface SigningKeyRow { keyId: string; publicKeyPem: string; createdAt: number }

export interface SessionEnd { sessionId: string; endedAt: number; endReason: string; eventCount: number }

/**
 * One group-commit unit: everything in it becomes durable together or not at all. It is written
 * by gateway `gatewayId`: sessions it starts are owned by it, and it may add to no session that
 * another gateway owns (the store refuses the whole batch with SessionsTakenOverError).
 */
export interface RecordBatch {
  gatewayId: string;
  sessionsStarted: SessionRow[];
  events: EventRow[];
  sessionsEnded: SessionEnd[];
  checkpoints: CheckpointRow[];
  seals: SealRow[];
}

/** An open session that changed hands: taken over from `previousOwner` ('' when it had none). */
export interface TakenOverSession { session: SessionRow; previousOwner: string }

/** A session some other gateway owns now. */
export interface SessionOwner { sessionId: string; gatewayId: string }

/**
 * A batch named sessions that another gateway owns now (it took them over, and sealed them, after
 * this gateway's lease expired). Nothing of the batch was written; without those sessions it may
 * be written again.
 */
export class SessionsTakenOverError extends Error {
  readonly sessions: SessionOwner[];
  constructor(sessions: SessionOwner[]) {
    super(`sessions taken over by another gateway: ${sessions.map((s) => `${s.sessionId} (by ${s.gatewayId || 'none'})`).join(', ')}`);
    this.sessions = sessions;
  }
}

/** Every session id a batch writes to (duplicates possible). */
export function sessionIdsOf(batch: RecordBatch): string[] {
  return [
    ...batch.sessionsStarted.map((s) => s.id), ...batch.events.map((e) => e.sessionId), ...batch.sessionsEnded.map((e) => e.sessionId),
    ...batch.checkpoints.map((c) => c.sessionId), ...batch.seals.map((x) => x.sessionId),
  ];
}

export interface SessionFilter {
  identity?: string;
  connection?: string;
  kind?: string;
  /** Every named claim must have exactly this value in the session's copy of the identity's claims. */
  claims?: Record<string, string>;
  /** Only sessions of these connections (by id); absent: any. */
  connectionIds?: string[];
  /** Only sessions whose recorded statements, commands, paths, refs or result samples hold every word (ended sessions: search-text.ts). */
  search?: string;
  /** Only sessions with each of these review flags (search-text.ts; ended sessions). */
  review?: Array<'denied' | 'held' | 'flagged' | 'lost' | 'masked'>;
  /** Only sessions that started before this one (the next page of a list, newest first). */
  before?: { startedAt: number; id: string };
  protocol?: string;
  /** open: not ended; ended: ended and not refused; refused: an attempt refused at the door. */
  outcome?: 'open' | 'ended' | 'refused';
  /** Started at or after / before these times (µs since epoch). */
  startedFrom?: number;
  startedTo?: number;
  limit?: number;
}

/** Claim names a session filter accepts (they end up in a JSON path, so nothing that needs quoting). */
export const CLAIM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;

export interface Store {
  // identities and tokens
  createIdentity(identity: Identity): Promise<void>;
  getIdentityByName(name: string): Promise<Identity | undefined>;
  getIdentity(id: string): Promise<Identity | undefined>;
  listIdentities(): Promise<Identity[]>;
  deleteIdentity(id: string): Promise<void>;
  createToken(token: TokenRecord): Promise<void>;
  getTokenByHash(hash: string): Promise<TokenRecord | undefined>;
  listTokens(identityId?: string): Promise<TokenRecord[]>;
  revokeToken(id: string, at: number): Promise<boolean>;
  revokeTokensOf(identityId: string, at: number): Promise<number>;

  // connections
  createConnection(connection: Connection): Promise<void>;
  getConnectionByName(name: string): Promise<Connection | undefined>;
  listConnections(): Promise<Connection[]>;
  deleteConnection(id: string): Promise<void>;

  // groups and access grants
  createGroup(group: GroupRecord): Promise<void>;
  getGroupByName(name: string): Promise<GroupRecord | undefined>;
  listGroups(): Promise<GroupRecord[]>;
  /** Its memberships and grants go with it. */
  deleteGroup(id: string): Promise<void>;
  /** False when the identity was a member already. */
  addGroupMember(groupId: string, identityId: string, at: number): Promise<boolean>;
  removeGroupMember(groupId: string, identityId: string): Promise<boolean>;
  /** Memberships, by group name then identity name; of one group when given. */
  listGroupMembers(groupId?: string): Promise<GroupMember[]>;
  /** The groups an identity is an explicit member of, by name. */
  listGroupsOf(identityId: string): Promise<GroupRecord[]>;
  /** False when the same subject already has the same action on the same connection (or on all). */
  addAccessGrant(grant: NewAccessGrant): Promise<boolean>;
  /**
   * A connect grant that ends at `expiresAt` (an approved access request): an earlier temporary
   * grant of the identity on the connection is extended; a permanent one is left as it is.
   */
  addTemporaryConnectGrant(identityId: string, connectionId: string, expiresAt: number, id: string, now: number): Promise<void>;
  removeAccessGrant(subjectType: AccessGrant['subjectType'], subjectId: string, action: AccessAction, connectionId: string | null): Promise<boolean>;
  /** Every grant: identities' before groups', then by name, action and connection name ('every connection' first). */
  listAccessGrants(): Promise<AccessGrant[]>;
  /** Grants to the identity or to groups of these names (in the same order as listAccessGrants). */
  listAccessGrantsOf(identityId: string, groupNames: string[]): Promise<AccessGrant[]>;

  // SSH public keys of identities
  addPublicKey(key: PublicKeyRecord): Promise<void>;
  getPublicKeyByFingerprint(fingerprint: string): Promise<PublicKeyRecord | undefined>;
  listPublicKeys(identityId?: string): Promise<PublicKeyRecord[]>;
  deletePublicKey(fingerprint: string): Promise<boolean>;

  // recordings
  writeBatch(batch: RecordBatch): Promise<void>;
  /**
   * How many writeBatch calls may be outstanding at once (default 1). A store that allows more
   * settles them in call order and fails every later one after a failure.
   */
  readonly writeDepth?: number;
  listSessions(filter: SessionFilter): Promise<SessionRow[]>;
  /** Adds up to `limit` ended sessions to the full-text index (search-text.ts); returns how many. */
  indexSessionsForSearch(limit: number): Promise<number>;
  getSession(id: string): Promise<SessionRow | undefined>;
  /** In order; with `afterSeq`, only the events after it (a live view's next part). */
  listEvents(sessionId: string, afterSeq?: number): Promise<EventRow[]>;
  /** Sessions that never got an end record (the gateway stopped without sealing them). */
  listOpenSessions(): Promise<SessionRow[]>;

  // several gateways on one store: leases and session ownership (docs/architecture.md)
  /** Registers the gateway's lease at its start (started and renewed now, by the store's clock). */
  startGatewayLease(gatewayId: string): Promise<void>;
  /** Renews the gateway's lease (now, by the store's clock). */
  renewGatewayLease(gatewayId: string): Promise<void>;
  /**
   * Makes `gatewayId` the owner of open sessions, in one atomic step, and returns them: those of
   * gateways whose lease was last renewed more than `leaseMs` ago, those whose owner holds no
   * lease (recorded before leases), and with `own` the gateway's own (it restarted). A batch
   * already writing to one of them finishes first; later writes of the previous owner are refused.
   */
  takeOverSessions(gatewayId: string, o: { leaseMs: number; own: boolean }): Promise<TakenOverSession[]>;
  /** Of these sessions, those owned by a gateway other than `gatewayId`, with their owner. */
  sessionsOwnedElsewhere(gatewayId: string, sessionIds: string[]): Promise<SessionOwner[]>;
  lastEvent(sessionId: string): Promise<EventRow | undefined>;
  listCheckpoints(sessionId: string): Promise<CheckpointRow[]>;
  getSeal(sessionId: string): Promise<SealRow | undefined>;
  /** Every gateway's seal log, each in position order (ordered by gateway, then position). */
  listSeals(): Promise<SealRow[]>;
  /** The newest seal of one gateway's log. */
  lastSeal(gatewayId: string): Promise<SealRow | undefined>;
  saveSigningKey(key: SigningKeyRow): Promise<void>;
  listSigningKeys(): Promise<SigningKeyRow[]>;

  // connectors
  createConnector(c: ConnectorRecord): Promise<void>;
  getConnectorByName(name: string): Promise<ConnectorRecord | undefined>;
  listConnectors(): Promise<ConnectorRecord[]>;
  /**
   * Uses up an enrollment token in one atomic step: true only for the one caller that presented
   * the valid, unexpired token of a connector that is not revoked.
   */
  consumeEnrollmentToken(name: string, tokenHash: string, now: number): Promise<boolean>;
  /** Replaces the mutable fields (enrollment, certificate, revocation) of connector `c.id`. */
  updateConnector(c: ConnectorRecord): Promise<void>;

  // retention
  setLegalHold(sessionId: string, hold: boolean): Promise<boolean>;
  /** Ended sessions of a connection that ended before `endedBefore` (µs) and are not on hold. */
  listExpiredSessions(connectionId: string, endedBefore: number): Promise<SessionRow[]>;
  /** Removes sessions' events, checkpoints and rows (their seals stay: they are links of the seal log). */
  deleteSessions(sessionIds: string[]): Promise<void>;

  // single sign-on: sign-ins in progress, and which identity a person at an identity provider is
  createPendingLogin(login: PendingLogin): Promise<void>;
  getPendingLogin(by: PendingLoginKey): Promise<PendingLogin | undefined>;
  /**
   * Moves a sign-in on from status `from` in one atomic step (with the identity or the refusal);
   * false when it was no longer in `from` (another request moved it first: a replay or a race).
   */
  advancePendingLogin(id: string, from: PendingLoginStatus, to: PendingLoginStatus, result?: { identityId?: string; error?: string; confirmHash?: string }): Promise<boolean>;
  /** Marks a signed-in, unconfirmed sign-in confirmed if `confirmHash` is its own; false otherwise (raced, replayed, or not that form). */
  confirmPendingLogin(id: string, confirmHash: string, at: number): Promise<boolean>;
  /** Counts a wrong code; returns the count so far. */
  countPendingLoginFailure(id: string): Promise<number>;
  /** Removes sign-ins that expired before `before` (ms); returns how many. */
  deletePendingLogins(before: number): Promise<number>;
  /** Records that `externalKey` (issuer and subject at an identity provider) is this identity; the key is unique. */
  linkExternalIdentity(externalKey: string, identityId: string, at: number): Promise<void>;
  getIdentityByExternalKey(externalKey: string): Promise<Identity | undefined>;
  /** Replaces the claims and external groups of an identity (a person signed in again). */
  updateIdentityAttributes(identityId: string, claims: IdentityClaims, externalGroups: string[]): Promise<void>;

  // OIDC token exchange: the ID tokens exchanged so far, so that a replay is refused (docs/workload-identity.md)
  /**
   * Puts the ID token under `tokenKey` (a hash, never the token) on record until `expiresAt` (ms),
   * in one atomic step: true for the one caller that recorded it; false when it is on record and
   * not expired at `now` (a replay, or a concurrent exchange of the same token). An entry expired
   * before `now` that was not yet removed is replaced (an issuer may reuse a jti after that).
   */
  recordExchangedToken(tokenKey: string, expiresAt: number, now: number): Promise<boolean>;
  /** Removes the entries that expired before `before` (ms); returns how many. */
  deleteExchangedTokens(before: number): Promise<number>;

  /**
   * Stores a new policy version, numbered one past the newest (atomically: two concurrent
   * applies get different numbers), and returns it.
   */
  addPolicyVersion(p: Omit<PolicyVersion, 'version'>): Promise<PolicyVersion>;
  /** The newest version (the one in force), or a given one. */
  getPolicyVersion(version?: number): Promise<PolicyVersion | undefined>;
  /** Every version, newest first, without their texts. */
  listPolicyVersions(): Promise<PolicyVersionInfo[]>;

  /** Appends one entry to a gateway's admin audit log; refuses a seq that is taken (another writer). */
  appendAuditEntry(e: AuditEntryRow): Promise<void>;
  /** The newest entry of a gateway's audit log (to continue its chain after a restart). */
  lastAuditEntry(gatewayId: string): Promise<AuditEntryRow | undefined>;
  /** Entries at or after `sinceUs`, oldest first, at most `limit` (the newest); all gateways. */
  listAuditEntries(sinceUs: number, limit: number): Promise<AuditEntryRow[]>;
  /** Every entry of every gateway, by gateway then seq (verification). */
  allAuditEntries(): Promise<AuditEntryRow[]>;

  createApproval(a: ApprovalRow): Promise<void>;
  getApproval(id: string): Promise<ApprovalRow | undefined>;
  /** Newest first; `status` filters (e.g. pending). */
  listApprovals(f: { status?: ApprovalStatus; limit?: number }): Promise<ApprovalRow[]>;
  /**
   * Replaces the approval's decisions, status, reason and decided_at only if its status is still
   * `expected` (two approvers, or an approval racing its timeout: one wins). Returns whether it did.
   */
  updateApproval(id: string, expected: ApprovalStatus, next: Pick<ApprovalRow, 'status' | 'decisions' | 'reason' | 'decidedAt'>): Promise<boolean>;

  close(): Promise<void>;
}
