// Row mapping for single sign-on (pending sign-ins), shared by both stores.
import type { PendingLogin, PendingLoginKey, PendingLoginStatus } from './types.ts';
import type { Row } from './row-mapping.ts';

const optText = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

export function toPendingLogin(r: Row): PendingLogin {
  return {
    id: String(r.id), pollTokenHash: String(r.poll_token_hash), userCode: String(r.user_code), provider: String(r.provider),
    protocol: r.protocol === 'saml' ? 'saml' : 'oidc', state: String(r.state), secret: String(r.secret),
    createdAt: Number(r.created_at), expiresAt: Number(r.expires_at), status: r.status as PendingLoginStatus,
    identityId: r.identity_id === null || r.identity_id === undefined ? null : String(r.identity_id),
    error: r.error === null || r.error === undefined ? null : String(r.error),
    startedFrom: optText(r.started_from), startedHost: optText(r.started_host), confirmHash: optText(r.confirm_hash),
    confirmedAt: r.confirmed_at === null || r.confirmed_at === undefined ? null : Number(r.confirmed_at), codeFailures: Number(r.code_failures ?? 0),
  };
}

/** The column a lookup key names, and its value (columns come from this fixed list only). */
export function pendingLoginLookup(by: PendingLoginKey): [column: string, value: string] {
  if ('id' in by) return ['id', by.id];
  if ('userCode' in by) return ['user_code', by.userCode];
  if ('pollTokenHash' in by) return ['poll_token_hash', by.pollTokenHash];
  return ['state', by.state];
}

/** Column values of a new pending sign-in, in PENDING_LOGIN_COLUMNS order. */
export function pendingLoginValues(l: PendingLogin): Array<string | number | null> {
  return [l.id, l.pollTokenHash, l.userCode, l.provider, l.protocol, l.state, l.secret, l.createdAt, l.expiresAt, l.status, l.identityId, l.error, l.startedFrom, l.startedHost];
}

export const PENDING_LOGIN_COLUMNS = 'id, poll_token_hash, user_code, provider, protocol, state, secret, created_at, expires_at, status, identity_id, error, started_from, started_host';
