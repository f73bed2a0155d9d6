// Row → domain object mapping shared by both stores. Columns have the same names in SQLite and
// PostgreSQL; the drivers differ only in how they return numbers (node-pg gives BIGINT as a
// string) and flags (SQLite 0/1, PostgreSQL booleans), which Number() and flag() absorb.
import type {
  AccessAction, AccessGrant, Connection, ConnectorRecord, GroupMember, GroupRecord, PublicKeyRecord, EventRow, Identity, IdentityClaims, IdentityKind, SealRow,
  ApprovalRow, ApprovalStatus, AuditEntryRow, PolicyVersion, PolicyVersionInfo, SessionRow, TokenRecord,
} from './types.ts';
import { reviewFlagNames } from './search-text.ts';

export type Row = Record<string, unknown>;

/** The session list's outcome filter, the same SQL in both stores (refusals end with 'refused: …'). */
export const OUTCOME_SQL: Record<'open' | 'ended' | 'refused', string> = {
  open: 'ended_at IS NULL',
  ended: "ended_at IS NOT NULL AND end_reason NOT LIKE 'refused%'",
  refused: "end_reason LIKE 'refused%'",
};

const flag = (v: unknown): boolean => v === true || Number(v) === 1;

export function toEvent(r: Row): EventRow {
  return { sessionId: String(r.session_id), seq: Number(r.seq), ts: Number(r.ts), type: String(r.type), data: String(r.data), hash: String(r.hash) };
}

export function toSeal(r: Row): SealRow {
  return {
    gatewayId: String(r.gateway_id), position: Number(r.position), sessionId: String(r.session_id), payload: String(r.payload), hash: String(r.hash),
    keyId: String(r.key_id), signature: String(r.signature),
  };
}

export function toIdentity(r: Row): Identity {
  const identity: Identity = { id: String(r.id), name: String(r.name), kind: r.kind as IdentityKind, isAdmin: flag(r.is_admin), createdAt: Number(r.created_at) };
  // Only workload identities carry these; ordinary ones come back exactly as they were created.
  if (r.claims !== null && r.claims !== undefined) identity.claims = JSON.parse(String(r.claims)) as IdentityClaims;
  if (r.auth_source !== null && r.auth_source !== undefined) identity.authSource = String(r.auth_source);
  if (r.workload_groups !== null && r.workload_groups !== undefined) identity.externalGroups = JSON.parse(String(r.workload_groups)) as string[];
  return identity;
}

/** The identity's workload columns as stored (claims, auth_source, workload_groups). */
export function identityWorkloadColumns(i: Identity): [string | null, string | null, string | null] {
  return [i.claims ? JSON.stringify(i.claims) : null, i.authSource ?? null, i.externalGroups ? JSON.stringify(i.externalGroups) : null];
}

/** A session's copy of the identity's claims as stored (JSON, or NULL). */
export function sessionClaimsColumn(s: SessionRow): string | null {
  return s.identityClaims ? JSON.stringify(s.identityClaims) : null;
}

export function toToken(r: Row): TokenRecord {
  return {
    id: String(r.id), identityId: String(r.identity_id), tokenHash: String(r.token_hash), createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at), revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
  };
}

export function toConnection(r: Row): Connection {
  const secret = r.sealed_secret;
  return {
    id: String(r.id), name: String(r.name), type: r.type as Connection['type'], host: String(r.host), port: Number(r.port),
    database: String(r.database), username: String(r.username),
    sealedSecret: secret instanceof Uint8Array ? Buffer.from(secret) : null,
    options: JSON.parse(String(r.options)) as Connection['options'], createdAt: Number(r.created_at),
  };
}

export function toSession(r: Row): SessionRow {
  return {
    id: String(r.id), protocol: String(r.protocol), identityId: String(r.identity_id), identityName: String(r.identity_name),
    identityKind: r.identity_kind as SessionRow['identityKind'], clientAddr: String(r.client_addr), applicationName: String(r.application_name),
    connectionId: String(r.connection_id), connectionName: String(r.connection_name), targetHost: String(r.target_host),
    targetPort: Number(r.target_port), targetDatabase: String(r.target_database), targetUser: String(r.target_user),
    recordingMode: r.recording === 'best-effort' ? 'best-effort' : 'durable', legalHold: flag(r.legal_hold),
    startedAt: Number(r.started_at), endedAt: r.ended_at === null ? null : Number(r.ended_at),
    endReason: r.end_reason === null ? null : String(r.end_reason), eventCount: Number(r.event_count),
    identityClaims: r.identity_claims === null || r.identity_claims === undefined ? null : JSON.parse(String(r.identity_claims)) as IdentityClaims,
    authMethod: nullableString(r.auth_method), gatewayId: r.gateway_id === null || r.gateway_id === undefined ? '' : String(r.gateway_id),
    ...(Number(r.review_flags ?? 0) !== 0 ? { reviewFlags: reviewFlagNames(Number(r.review_flags)) } : {}),
  };
}

const nullableNumber = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const nullableString = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

export function toConnector(r: Row): ConnectorRecord {
  return {
    id: String(r.id), name: String(r.name), createdAt: Number(r.created_at),
    enrollmentTokenHash: nullableString(r.enrollment_token_hash), enrollmentExpiresAt: nullableNumber(r.enrollment_expires_at),
    enrolledAt: nullableNumber(r.enrolled_at), certSerial: nullableString(r.cert_serial), revokedAt: nullableNumber(r.revoked_at),
  };
}

export function toPublicKey(r: Row): PublicKeyRecord {
  return { id: String(r.id), identityId: String(r.identity_id), fingerprint: String(r.fingerprint), publicKey: String(r.public_key), createdAt: Number(r.created_at) };
}

export function toGroup(r: Row): GroupRecord {
  return { id: String(r.id), name: String(r.name), createdAt: Number(r.created_at) };
}

/** Rows of GROUP_MEMBER_SELECT. */
export function toGroupMember(r: Row): GroupMember {
  return { groupId: String(r.group_id), groupName: String(r.group_name), identityId: String(r.identity_id), identityName: String(r.identity_name), createdAt: Number(r.created_at) };
}

export const GROUP_MEMBER_SELECT = `SELECT m.group_id, g.name AS group_name, m.identity_id, i.name AS identity_name, m.created_at
  FROM group_members m JOIN groups g ON g.id = m.group_id JOIN identities i ON i.id = m.identity_id`;

/** Grants with their subject's and connection's names; the same SQL in both stores (add WHERE, then ACCESS_GRANT_ORDER). */
export const ACCESS_GRANT_SELECT = `SELECT a.id, a.identity_id, a.group_id, a.action, a.connection_id, a.created_at, a.expires_at,
  coalesce(i.name, g.name) AS subject_name, c.name AS connection_name
  FROM access_grants a LEFT JOIN identities i ON i.id = a.identity_id LEFT JOIN groups g ON g.id = a.group_id
  LEFT JOIN connections c ON c.id = a.connection_id`;

/** Identities before groups, then by name, action, and connection name ("every connection" first). */
export const ACCESS_GRANT_ORDER = "ORDER BY (a.identity_id IS NULL), subject_name, a.action, coalesce(c.name, '')";

export function toAccessGrant(r: Row): AccessGrant {
  const byIdentity = r.identity_id !== null && r.identity_id !== undefined;
  return {
    id: String(r.id), subjectType: byIdentity ? 'identity' : 'group', subjectId: String(byIdentity ? r.identity_id : r.group_id),
    subjectName: String(r.subject_name), action: r.action as AccessAction, connectionId: nullableString(r.connection_id),
    connectionName: nullableString(r.connection_name), createdAt: Number(r.created_at),
    expiresAt: r.expires_at === null || r.expires_at === undefined ? null : Number(r.expires_at),
  };
}

export function toPolicyVersionInfo(r: Row): PolicyVersionInfo {
  return { version: Number(r.version), hash: String(r.hash), appliedBy: String(r.applied_by), appliedAt: Number(r.applied_at) };
}

export function toPolicyVersion(r: Row): PolicyVersion {
  return { ...toPolicyVersionInfo(r), document: String(r.document), source: String(r.source) };
}

export function toAuditEntry(r: Row): AuditEntryRow {
  return {
    gatewayId: String(r.gateway_id), seq: Number(r.seq), ts: Number(r.ts), type: String(r.type), data: String(r.data), hash: String(r.hash),
    keyId: String(r.key_id), signature: String(r.signature),
  };
}

export const APPROVAL_COLUMNS = ['id', 'status', 'gateway_id', 'session_id', 'requester_id', 'requester_name', 'requester_kind', 'requester_claims',
  'connection_id', 'connection_name', 'protocol', 'rule', 'policy_version', 'action', 'approvers', 'quorum', 'decisions', 'reason', 'created_at',
  'expires_at', 'decided_at'] as const;

export function approvalValues(a: ApprovalRow): unknown[] {
  return [a.id, a.status, a.gatewayId, a.sessionId, a.requesterId, a.requesterName, a.requesterKind, a.requesterClaims ? JSON.stringify(a.requesterClaims) : null,
    a.connectionId, a.connectionName, a.protocol, a.rule, a.policyVersion, a.action, a.approvers, a.quorum, a.decisions, a.reason, a.createdAt,
    a.expiresAt, a.decidedAt];
}

export function toApproval(r: Row): ApprovalRow {
  return {
    id: String(r.id), status: String(r.status) as ApprovalStatus, gatewayId: String(r.gateway_id), sessionId: String(r.session_id),
    requesterId: String(r.requester_id), requesterName: String(r.requester_name), requesterKind: String(r.requester_kind),
    requesterClaims: r.requester_claims ? JSON.parse(String(r.requester_claims)) as IdentityClaims : null,
    connectionId: String(r.connection_id), connectionName: String(r.connection_name), protocol: String(r.protocol), rule: String(r.rule),
    policyVersion: Number(r.policy_version), action: String(r.action), approvers: String(r.approvers), quorum: Number(r.quorum),
    decisions: String(r.decisions), reason: r.reason === null ? null : String(r.reason), createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at), decidedAt: r.decided_at === null ? null : Number(r.decided_at),
  };
}
