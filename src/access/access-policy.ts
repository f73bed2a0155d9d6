// The access decision, pure over data the caller loaded: may this identity take this action on
// this connection? Default deny; every answer says which grant allowed it or what was missing.
import type { AccessAction, AccessGrant, Identity } from '../store/types.ts';
import { isRunIdentity } from '../identity/workload/run-identity.ts';

/** A group an identity is in: as an explicit member, or carried from outside (trust policy, IdP). */
export interface EffectiveGroup { name: string; source: 'member' | 'external' }

/** Everything a decision about one identity needs. */
export interface AccessSubject {
  identity: Pick<Identity, 'id' | 'name' | 'isAdmin' | 'authSource'>;
  groups: EffectiveGroup[];
  /** Grants to the identity or its groups; grants to anyone else are ignored. */
  grants: AccessGrant[];
}

export interface ConnectionRef { id: string; name: string }

export interface Decision {
  allowed: boolean;
  reason: string;
  /** The grant that allowed it; absent when denied or when the bootstrap administrator flag did. */
  via?: { grant: string; subject: string; action: AccessAction; connection: string };
}

/** Explicit memberships first, then external groups not already among them. */
export function effectiveGroups(memberOf: string[], external: string[] = []): EffectiveGroup[] {
  const out: EffectiveGroup[] = memberOf.map((name) => ({ name, source: 'member' }));
  for (const name of external) if (!out.some((g) => g.name === name)) out.push({ name, source: 'external' });
  return out;
}

/** `alice` for an identity, `group:ci` for a group: the form the CLI takes and prints. */
export function subjectLabel(g: Pick<AccessGrant, 'subjectType' | 'subjectName'>): string {
  return g.subjectType === 'group' ? `group:${g.subjectName}` : g.subjectName;
}

/**
 * admin covers approve and audit on the same connections; connect is only ever granted as such,
 * so that administrators and auditors reach targets only where a grant says they may.
 */
function covers(granted: AccessAction, wanted: AccessAction): boolean {
  return granted === wanted || (granted === 'admin' && wanted !== 'connect');
}

function isSubjectOf(g: AccessGrant, s: AccessSubject): boolean {
  return g.subjectType === 'identity' ? g.subjectId === s.identity.id : s.groups.some((x) => x.name === g.subjectName);
}

function onConnection(g: AccessGrant, connection: ConnectionRef | null): boolean {
  return g.connectionId === null || (connection !== null && g.connectionId === connection.id);
}

/**
 * A run identity (one CI job or agent run) never holds admin, whatever its groups say: admin
 * grants and the bootstrap flag do not count for it. Checked here, at every decision, because
 * grants to its groups can change at any time.
 */
function mayHold(s: AccessSubject, g: AccessGrant): boolean {
  return g.action !== 'admin' || !isRunIdentity(s.identity);
}

const bootstrapAdmin = (s: AccessSubject): boolean => s.identity.isAdmin && !isRunIdentity(s.identity);

/** Grants that allow `action` on `connection`, the most telling first: exact action, direct, this connection. */
function matching(s: AccessSubject, action: AccessAction, connection: ConnectionRef | null): AccessGrant[] {
  const rank = (g: AccessGrant) => (g.action === action ? 0 : 4) + (g.subjectType === 'identity' ? 0 : 2) + (g.connectionId === null ? 1 : 0);
  return s.grants.filter((g) => covers(g.action, action) && mayHold(s, g) && isSubjectOf(g, s) && onConnection(g, connection))
    .sort((a, b) => rank(a) - rank(b) || a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
}

const where = (connection: ConnectionRef | null) => (connection ? `on connection ${connection.name}` : 'on every connection (*)');

/** Decides; `connection` null asks about the whole gateway (only grants on every connection count). */
export function decide(s: AccessSubject, action: AccessAction, connection: ConnectionRef | null): Decision {
  const name = s.identity.name;
  const grant = matching(s, action, connection)[0];
  if (grant) {
    const target = grant.connectionId === null ? '*' : grant.connectionName ?? grant.connectionId;
    const through = grant.subjectType === 'group' ? ` through group ${grant.subjectName}` : '';
    const implied = grant.action === action ? '' : ` (${grant.action} includes ${action})`;
    return {
      allowed: true,
      reason: `identity ${name} may ${action} ${where(connection)}: grant ${grant.id} gives ${grant.action} on ${target}${through}${implied}`,
      via: { grant: grant.id, subject: subjectLabel(grant), action: grant.action, connection: target },
    };
  }
  if (bootstrapAdmin(s) && action !== 'connect') {
    return { allowed: true, reason: `identity ${name} may ${action} ${where(connection)}: it is the gateway's bootstrap administrator` };
  }
  const wanted = action === 'connect' || action === 'admin' ? action : `${action} or admin`;
  const groups = s.groups.length ? `through groups [${s.groups.map((g) => g.name).join(', ')}]` : 'through a group (it is in none)';
  let reason = `identity ${name} has no ${wanted} grant ${where(connection)}, directly or ${groups}`;
  const ignored = s.grants.filter((g) => !mayHold(s, g) && covers(g.action, action) && isSubjectOf(g, s) && onConnection(g, connection));
  if (ignored.length) reason += `; it is a run identity, which never holds admin (ignored: ${ignored.map((g) => `grant ${g.id} to ${subjectLabel(g)}`).join(', ')})`;
  if (action === 'connect') {
    // Say so when it holds other actions there: admin or audit is easily taken for access.
    const held = [...new Set([...(s.identity.isAdmin ? ['admin'] : []), ...s.grants.filter((g) => isSubjectOf(g, s) && onConnection(g, connection)).map((g) => g.action)])];
    if (held.length) reason += `; it has ${held.join(', ')} there, which ${held.length === 1 ? 'does' : 'do'} not include connect`;
  }
  return { allowed: false, reason };
}

/** Where an identity may take `action`: everywhere, or on these connections only (possibly none). */
export function scope(s: AccessSubject, action: AccessAction): { every: true } | { every: false; connectionIds: string[] } {
  if (bootstrapAdmin(s) && action !== 'connect') return { every: true };
  const grants = s.grants.filter((g) => covers(g.action, action) && mayHold(s, g) && isSubjectOf(g, s));
  if (grants.some((g) => g.connectionId === null)) return { every: true };
  return { every: false, connectionIds: [...new Set(grants.map((g) => g.connectionId!))] };
}
