// The access decision as a pure function: which grant allows what, what admin includes, how a
// group (explicit or external) passes a grant on, and what a denial says was missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, effectiveGroups, scope, type AccessSubject } from '../../src/access/access-policy.ts';
import type { AccessAction, AccessGrant } from '../../src/store/types.ts';

const DB1 = { id: 'conn_db1', name: 'db1' };
const DB2 = { id: 'conn_db2', name: 'db2' };

let next = 0;
function grant(subject: string, action: AccessAction, connection: typeof DB1 | null, createdAt = ++next): AccessGrant {
  const isGroup = subject.startsWith('group:');
  const name = isGroup ? subject.slice(6) : subject;
  return {
    id: `grant_${name}_${action}_${connection?.name ?? 'all'}`, subjectType: isGroup ? 'group' : 'identity', subjectId: isGroup ? `grp_${name}` : `id_${name}`,
    subjectName: name, action, connectionId: connection?.id ?? null, connectionName: connection?.name ?? null, createdAt, expiresAt: null,
  };
}

function alice(grants: AccessGrant[], o: { member?: string[]; external?: string[]; isAdmin?: boolean } = {}): AccessSubject {
  return { identity: { id: 'id_alice', name: 'alice', isAdmin: o.isAdmin ?? false }, groups: effectiveGroups(o.member ?? [], o.external), grants };
}

test('effective groups: explicit memberships, then external groups not already among them', () => {
  assert.deepEqual(effectiveGroups(['dev', 'ci'], ['ci', 'deployers']), [
    { name: 'dev', source: 'member' }, { name: 'ci', source: 'member' }, { name: 'deployers', source: 'external' },
  ]);
  assert.deepEqual(effectiveGroups([], undefined), []);
});

test('default deny: nothing granted, nothing allowed; the reason names the action, the connection and the groups', () => {
  const d = decide(alice([], { member: ['ci', 'dev'] }), 'connect', DB1);
  assert.deepEqual(d, { allowed: false, reason: 'identity alice has no connect grant on connection db1, directly or through groups [ci, dev]' });
  assert.equal(decide(alice([]), 'connect', DB1).reason, 'identity alice has no connect grant on connection db1, directly or through a group (it is in none)');
  assert.equal(decide(alice([]), 'audit', DB1).reason, 'identity alice has no audit or admin grant on connection db1, directly or through a group (it is in none)');
  assert.equal(decide(alice([]), 'admin', null).reason, 'identity alice has no admin grant on every connection (*), directly or through a group (it is in none)');
});

test('a direct grant allows that action on that connection only', () => {
  const s = alice([grant('alice', 'connect', DB1)]);
  const d = decide(s, 'connect', DB1);
  assert.equal(d.allowed, true);
  assert.deepEqual(d.via, { grant: 'grant_alice_connect_db1', subject: 'alice', action: 'connect', connection: 'db1' });
  assert.match(d.reason, /^identity alice may connect on connection db1: grant grant_alice_connect_db1 gives connect on db1$/);
  assert.equal(decide(s, 'connect', DB2).allowed, false, 'another connection');
  assert.equal(decide(s, 'audit', DB1).allowed, false, 'another action');
  assert.equal(decide(s, 'connect', null).allowed, false, 'not gateway-wide');
});

test('grants to groups: through explicit membership and through external groups; others\' grants are ignored', () => {
  const grants = [grant('group:ci', 'connect', DB1), grant('group:deployers', 'connect', DB2), grant('bob', 'connect', DB1), grant('group:other', 'audit', DB1)];
  const member = decide(alice(grants, { member: ['ci'] }), 'connect', DB1);
  assert.equal(member.allowed, true);
  assert.deepEqual(member.via, { grant: 'grant_ci_connect_db1', subject: 'group:ci', action: 'connect', connection: 'db1' });
  assert.match(member.reason, / through group ci$/);
  const external = decide(alice(grants, { external: ['deployers'] }), 'connect', DB2);
  assert.equal(external.allowed, true);
  assert.equal(external.via?.subject, 'group:deployers');
  assert.equal(decide(alice(grants), 'connect', DB1).allowed, false, "bob's grant and groups alice is not in do not count");
  assert.equal(decide(alice(grants, { member: ['ci'] }), 'audit', DB1).allowed, false);
});

test('"*" (every connection) covers each connection and the gateway as a whole', () => {
  const s = alice([grant('group:ops', 'audit', null)], { member: ['ops'] });
  for (const c of [DB1, DB2, null]) assert.equal(decide(s, 'audit', c).allowed, true);
  assert.equal(decide(s, 'audit', DB1).via?.connection, '*');
  assert.equal(decide(alice([grant('alice', 'admin', DB1)]), 'admin', null).allowed, false, 'admin of one connection is no gateway administrator');
});

test('admin includes approve and audit on the same connections, never connect', () => {
  const s = alice([grant('alice', 'admin', DB1)]);
  for (const a of ['admin', 'approve', 'audit'] as const) assert.equal(decide(s, a, DB1).allowed, true, a);
  assert.match(decide(s, 'audit', DB1).reason, /\(admin includes audit\)$/);
  assert.equal(decide(s, 'audit', DB2).allowed, false);
  const connect = decide(s, 'connect', DB1);
  assert.equal(connect.allowed, false);
  assert.match(connect.reason, /; it has admin there, which does not include connect$/);
  assert.equal(decide(alice([grant('alice', 'audit', DB1)]), 'admin', DB1).allowed, false, 'audit does not include admin');
  assert.match(decide(alice([grant('alice', 'audit', DB1), grant('group:ops', 'approve', null)], { member: ['ops'] }), 'connect', DB1).reason,
    /; it has audit, approve there, which do not include connect$/);
});

test('the bootstrap administrator flag: every action but connect, everywhere', () => {
  const s = alice([], { isAdmin: true });
  for (const c of [DB1, null]) for (const a of ['admin', 'approve', 'audit'] as const) assert.equal(decide(s, a, c).allowed, true, `${a} ${c?.name}`);
  const d = decide(s, 'admin', null);
  assert.equal(d.via, undefined);
  assert.match(d.reason, /bootstrap administrator/);
  const connect = decide(s, 'connect', DB1);
  assert.equal(connect.allowed, false);
  assert.match(connect.reason, /it has admin there/);
  assert.equal(decide(alice([grant('alice', 'connect', DB1)], { isAdmin: true }), 'connect', DB1).allowed, true, 'with a connect grant it connects');
});

test('the most telling grant explains: the exact action, then a direct grant, then this connection', () => {
  const grants = [grant('group:ops', 'admin', null, 1), grant('group:ops', 'audit', null, 2), grant('alice', 'audit', null, 3), grant('group:ops', 'audit', DB1, 4), grant('alice', 'audit', DB1, 5)];
  const pick = (gs: AccessGrant[]) => decide(alice(gs, { member: ['ops'] }), 'audit', DB1).via?.grant;
  assert.equal(pick(grants), 'grant_alice_audit_db1');
  assert.equal(pick(grants.slice(0, 4)), 'grant_alice_audit_all');
  assert.equal(pick(grants.slice(0, 2).concat(grants[3])), 'grant_ops_audit_db1');
  assert.equal(pick(grants.slice(0, 2)), 'grant_ops_audit_all');
  assert.equal(pick(grants.slice(0, 1)), 'grant_ops_admin_all');
});

test('scope: every connection, some, or none', () => {
  assert.deepEqual(scope(alice([]), 'audit'), { every: false, connectionIds: [] });
  assert.deepEqual(scope(alice([grant('alice', 'connect', DB1)]), 'audit'), { every: false, connectionIds: [] }, 'connect does not read recordings');
  assert.deepEqual(scope(alice([grant('alice', 'audit', DB1), grant('group:ops', 'admin', DB2), grant('group:x', 'audit', null)], { member: ['ops'] }), 'audit'),
    { every: false, connectionIds: ['conn_db1', 'conn_db2'] });
  assert.deepEqual(scope(alice([grant('group:ops', 'audit', null)], { external: ['ops'] }), 'audit'), { every: true });
  assert.deepEqual(scope(alice([], { isAdmin: true }), 'audit'), { every: true });
  assert.deepEqual(scope(alice([], { isAdmin: true }), 'connect'), { every: false, connectionIds: [] });
});

test('a run identity never holds admin: admin grants (direct, through any group) and the bootstrap flag do not count for it', () => {
  const grants = [grant('group:platform', 'admin', null), grant('run', 'admin', DB1), grant('group:platform', 'connect', DB1), grant('group:platform', 'audit', DB2)];
  const run: AccessSubject = {
    identity: { id: 'id_run', name: 'run', isAdmin: true, authSource: 'oidc-exchange:gh' }, groups: effectiveGroups(['ops'], ['platform']), grants,
  };
  const admin = decide(run, 'admin', null);
  assert.equal(admin.allowed, false);
  assert.equal(admin.reason, 'identity run has no admin grant on every connection (*), directly or through groups [ops, platform]; '
    + 'it is a run identity, which never holds admin (ignored: grant grant_platform_admin_all to group:platform)');
  assert.equal(decide(run, 'approve', DB1).allowed, false, 'admin on db1 would include approve there');
  assert.equal(decide(run, 'audit', DB1).allowed, false);
  assert.equal(decide(run, 'connect', DB1).allowed, true, 'its other grants still apply');
  assert.equal(decide(run, 'audit', DB2).allowed, true);
  assert.deepEqual(scope(run, 'audit'), { every: false, connectionIds: ['conn_db2'] });
  // The same grants make anyone else an administrator.
  const person: AccessSubject = { ...run, identity: { id: 'id_p', name: 'p', isAdmin: false, authSource: undefined } };
  assert.equal(decide(person, 'admin', null).allowed, true);
});
