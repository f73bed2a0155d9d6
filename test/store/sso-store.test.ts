// The store's single sign-on part (migration 10), on both stores: pending sign-ins found by each
// of their keys, moved on in one atomic step (a replay or a race loses), expired ones removed;
// people's issuer-and-subject keys linked to one identity each, refreshed claims and groups, and
// everything removed with the identity.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { PostgresStore } from '../../src/store/postgres/postgres-store.ts';
import type { Identity, PendingLogin, Store } from '../../src/store/types.ts';

let cluster: PgCluster;
const work = mkdtempSync(path.join(tmpdir(), 'gatehouse-sso-store-'));
let databases = 0;

const STORES: Array<{ name: string; open(): Promise<Store> }> = [
  { name: 'sqlite', open: async () => new SqliteStore(path.join(mkdtempSync(path.join(work, 's-')), 'gatehouse.db')) },
  {
    name: 'postgres',
    async open() {
      const db = `sso_${++databases}`;
      await cluster.sql(`CREATE DATABASE ${db};`);
      return PostgresStore.open(`postgres://postgres@${cluster.host}:${cluster.port}/${db}`);
    },
  },
];

before(async () => { cluster = await startPgCluster(); });
after(async () => {
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

const MS0 = 1_790_000_000_000;

function login(id: string, o: Partial<PendingLogin> = {}): PendingLogin {
  return {
    id, pollTokenHash: `poll-${id}`, userCode: `CODE-${id.toUpperCase()}`, provider: 'corp', protocol: 'oidc', state: `state-${id}`,
    secret: '{"verifier":"v","nonce":"n"}', createdAt: MS0, expiresAt: MS0 + 600_000, status: 'pending', identityId: null, error: null,
    startedFrom: '198.51.100.7', startedHost: 'laptop', confirmHash: null, confirmedAt: null, codeFailures: 0, ...o,
  };
}

const person = (name: string): Identity => ({ id: `id_${name}`, name, kind: 'human', isAdmin: false, createdAt: MS0, authSource: 'oidc:corp', claims: { sub: name }, externalGroups: ['dev'] });

for (const s of STORES) {
  describe(`${s.name} store: single sign-on`, () => {
    test('pending sign-ins: found by id, user code, poll token hash and state; advanced once; expired ones removed', async () => {
      const store = await s.open();
      try {
        const a = login('a');
        await store.createPendingLogin(a);
        await store.createPendingLogin(login('b', { protocol: 'saml', expiresAt: MS0 + 1000 }));
        for (const key of [{ id: 'a' }, { userCode: 'CODE-A' }, { pollTokenHash: 'poll-a' }, { state: 'state-a' }]) {
          assert.deepEqual(await store.getPendingLogin(key), a, JSON.stringify(key));
        }
        assert.equal(await store.getPendingLogin({ id: 'nope' }), undefined);
        await assert.rejects(store.createPendingLogin(login('c', { userCode: 'CODE-A' })), 'user codes are unique');

        await store.createIdentity(person('alice'));
        assert.equal(await store.advancePendingLogin('a', 'pending', 'signed-in', { identityId: 'id_alice' }), true);
        assert.equal(await store.advancePendingLogin('a', 'pending', 'refused', { error: 'late' }), false, 'a second answer loses');
        assert.deepEqual(await store.getPendingLogin({ id: 'a' }), { ...a, status: 'signed-in', identityId: 'id_alice' });
        assert.equal(await store.advancePendingLogin('a', 'signed-in', 'collected'), true);
        assert.equal(await store.advancePendingLogin('a', 'signed-in', 'collected'), false, 'the token is collected once');
        assert.equal(await store.advancePendingLogin('b', 'pending', 'refused', { error: 'the SAML assertion is not signed' }), true);
        assert.equal((await store.getPendingLogin({ id: 'b' }))?.error, 'the SAML assertion is not signed');

        assert.equal(await store.deletePendingLogins(MS0 + 2000), 1);
        assert.equal(await store.getPendingLogin({ id: 'b' }), undefined);
        assert.ok(await store.getPendingLogin({ id: 'a' }));
        await store.deleteIdentity('id_alice');
        assert.equal(await store.getPendingLogin({ id: 'a' }), undefined, 'a sign-in goes with its identity');
      } finally {
        await store.close();
      }
    });

    test('confirmation: released only with the form\'s own secret hash, once; wrong codes counted', async () => {
      const store = await s.open();
      try {
        await store.createIdentity(person('carol'));
        await store.createPendingLogin(login('k'));
        assert.equal(await store.confirmPendingLogin('k', 'h1', MS0 + 5), false, 'not signed in at the provider yet');
        assert.equal(await store.advancePendingLogin('k', 'pending', 'signed-in', { identityId: 'id_carol', confirmHash: 'h1' }), true);
        assert.equal(await store.countPendingLoginFailure('k'), 1);
        assert.equal(await store.countPendingLoginFailure('k'), 2);
        assert.equal(await store.confirmPendingLogin('k', 'h2', MS0 + 5), false, 'another form\'s secret');
        assert.equal(await store.confirmPendingLogin('k', 'h1', MS0 + 5), true);
        assert.equal(await store.confirmPendingLogin('k', 'h1', MS0 + 6), false, 'confirmed once');
        const k = (await store.getPendingLogin({ id: 'k' }))!;
        assert.deepEqual([k.confirmHash, k.confirmedAt, k.codeFailures, k.startedFrom, k.startedHost], ['h1', MS0 + 5, 2, '198.51.100.7', 'laptop']);
      } finally {
        await store.close();
      }
    });

    test('external identities: one identity per issuer and subject; claims and groups refreshed; removed with the identity', async () => {
      const store = await s.open();
      try {
        await store.createIdentity(person('alice'));
        await store.createIdentity(person('bob'));
        await store.linkExternalIdentity('oidc:https://idp#alice', 'id_alice', MS0);
        await assert.rejects(store.linkExternalIdentity('oidc:https://idp#alice', 'id_bob', MS0), 'a key names one identity');
        assert.equal((await store.getIdentityByExternalKey('oidc:https://idp#alice'))?.name, 'alice');
        assert.equal(await store.getIdentityByExternalKey('oidc:https://other#alice'), undefined);

        await store.updateIdentityAttributes('id_alice', { sub: 'alice', email: 'a@example.com' }, ['dba', 'oncall']);
        const alice = (await store.getIdentity('id_alice'))!;
        assert.deepEqual(alice.claims, { sub: 'alice', email: 'a@example.com' });
        assert.deepEqual(alice.externalGroups, ['dba', 'oncall']);
        assert.equal(alice.authSource, 'oidc:corp');

        await store.deleteIdentity('id_alice');
        assert.equal(await store.getIdentityByExternalKey('oidc:https://idp#alice'), undefined);
        await store.linkExternalIdentity('oidc:https://idp#alice', 'id_bob', MS0);
        assert.equal((await store.getIdentityByExternalKey('oidc:https://idp#alice'))?.name, 'bob', 'the key is free again');
      } finally {
        await store.close();
      }
    });
  });
}
