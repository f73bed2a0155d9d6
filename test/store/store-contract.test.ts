// The store contract: one suite of behaviour tests, run against both implementations — the
// embedded SQLite store (a file in a temp dir) and the shared PostgreSQL store (a fresh database
// in a throwaway cluster). Every test gets a store of its own. Then a few PostgreSQL-only checks
// (concurrent migrations, one transaction per batch, unreachable server), the configuration of
// `store`, and an end-to-end run: a real `gatehouse up --store postgres://…` records psql sessions
// against a second cluster, and their exported bundles verify offline.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { startPgCluster, freePort, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, GATEHOUSE_BIN, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { MIGRATIONS as SQLITE_MIGRATIONS } from '../../src/store/sqlite/migrations.ts';
import { PostgresStore } from '../../src/store/postgres/postgres-store.ts';
import { MIGRATIONS as POSTGRES_MIGRATIONS } from '../../src/store/postgres/migrations.ts';
import { loadConfig } from '../../src/config/config.ts';
import { verifyStore } from '../../src/integrity/store-verifier.ts';
import { readSealLogHead } from '../../src/integrity/seal-log-anchor.ts';
import { SessionsTakenOverError } from '../../src/store/types.ts';
import type {
  AccessGrant, CheckpointRow, Connection, EventRow, GroupRecord, Identity, NewAccessGrant, RecordBatch, SealRow, SessionRow, Store, TokenRecord,
} from '../../src/store/types.ts';

// ---- the two stores --------------------------------------------------------------------------

interface StoreHandle {
  store: Store;
  /** Opens the same store again (a second gateway, or a restart): migrations run again. */
  reopen(): Promise<Store>;
  /** Versions recorded in schema_migrations, ascending. */
  migrations(): Promise<number[]>;
  dispose(): Promise<void>;
}

interface StoreFactory {
  name: string;
  migrationCount: number;
  create(): Promise<StoreHandle>;
}

let cluster: PgCluster;
let databases = 0;
const work = mkdtempSync(path.join(tmpdir(), 'gatehouse-store-contract-'));

function pgUrl(db: string, c: PgCluster = cluster): string {
  return `postgres://postgres@${c.host}:${c.port}/${db}`;
}

async function freshDatabase(): Promise<string> {
  const db = `store_${++databases}`;
  await cluster.sql(`CREATE DATABASE ${db};`);
  return db;
}

/** The embedded store, its recording batches committed inline or on the writer thread. */
function sqliteFactory(name: string, recordWriter: 'inline' | 'thread'): StoreFactory {
  return {
    name,
    migrationCount: SQLITE_MIGRATIONS.length,
    async create() {
      const dir = mkdtempSync(path.join(work, 'sqlite-'));
      const file = path.join(dir, 'gatehouse.db');
      const opened: SqliteStore[] = [new SqliteStore(file, { recordWriter })];
      return {
        store: opened[0],
        async reopen() { const s = new SqliteStore(file, { recordWriter }); opened.push(s); return s; },
        async migrations() {
          const db = new DatabaseSync(file, { readOnly: true });
          try {
            return (db.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as Array<{ version: number }>).map((r) => Number(r.version));
          } finally {
            db.close();
          }
        },
        async dispose() {
          for (const s of opened) await s.close().catch(() => {});
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  };
}

const FACTORIES: StoreFactory[] = [
  sqliteFactory('sqlite', 'inline'),
  sqliteFactory('sqlite (writer thread)', 'thread'),
  {
    name: 'postgres',
    migrationCount: POSTGRES_MIGRATIONS.length,
    async create() {
      const db = await freshDatabase();
      const opened: PostgresStore[] = [await PostgresStore.open(pgUrl(db))];
      return {
        store: opened[0],
        async reopen() { const s = await PostgresStore.open(pgUrl(db)); opened.push(s); return s; },
        async migrations() {
          const out = await cluster.sql('SELECT version FROM schema_migrations ORDER BY version;', db);
          return out === '' ? [] : out.split('\n').map(Number);
        },
        async dispose() {
          for (const s of opened) await s.close().catch(() => {});
          await cluster.sql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE);`);
        },
      };
    },
  },
];

before(async () => {
  // autovacuum off: the one-transaction-per-batch check counts transaction ids.
  cluster = await startPgCluster({ settings: { autovacuum: 'off' } });
});

after(async () => {
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function withStore(f: StoreFactory, fn: (store: Store, h: StoreHandle) => Promise<void>): Promise<void> {
  const h = await f.create();
  try {
    await fn(h.store, h);
  } finally {
    await h.dispose();
  }
}

// ---- fixtures --------------------------------------------------------------------------------

const T0 = 1_790_000_000_000_000; // µs, 2026
const MS0 = 1_790_000_000_000; // ms

function identity(name: string, o: Partial<Identity> = {}): Identity {
  return { id: `id_${name}`, name, kind: 'agent', isAdmin: false, createdAt: MS0, ...o };
}

function group(name: string, o: Partial<GroupRecord> = {}): GroupRecord {
  return { id: `grp_${name}`, name, createdAt: MS0, ...o };
}

/** A grant as the store returns it (names filled in); fresh() is what goes in. */
function grant(id: string, type: AccessGrant['subjectType'], subject: string, action: AccessGrant['action'], conn: string | null, createdAt: number): AccessGrant {
  return {
    id, subjectType: type, subjectId: `${type === 'identity' ? 'id' : 'grp'}_${subject}`, subjectName: subject, action,
    connectionId: conn === null ? null : `conn_${conn}`, connectionName: conn, createdAt, expiresAt: null,
  };
}

function fresh(g: AccessGrant): NewAccessGrant {
  const { subjectName: _s, connectionName: _c, ...rest } = g;
  return rest;
}

function token(id: string, identityId: string, o: Partial<TokenRecord> = {}): TokenRecord {
  return { id, identityId, tokenHash: `hash_${id}`, createdAt: MS0, expiresAt: MS0 + 3_600_000, revokedAt: null, ...o };
}

function connection(name: string, o: Partial<Connection> = {}): Connection {
  return {
    id: `conn_${name}`, name, type: 'postgres', host: '127.0.0.1', port: 5432, database: 'app', username: 'app_user',
    sealedSecret: null, options: {}, createdAt: MS0, ...o,
  };
}

function session(id: string, startedAt: number, o: Partial<SessionRow> = {}): SessionRow {
  return {
    id, protocol: 'postgres', identityId: 'id_agent', identityName: 'agent', identityKind: 'agent', clientAddr: '127.0.0.1:50000',
    applicationName: 'psql', connectionId: 'conn_app', connectionName: 'app', targetHost: '10.0.0.5', targetPort: 5432,
    targetDatabase: 'app', targetUser: 'app_user', recordingMode: 'durable', startedAt, endedAt: null, endReason: null, eventCount: 0, ...o,
  };
}

/** What a store returns for a session written by writeBatch (never on hold at first; no claims or auth method unless given). */
function stored(s: SessionRow, o: Partial<SessionRow> = {}): SessionRow {
  return { identityClaims: null, authMethod: null, gatewayId: 'gw_a', ...s, legalHold: false, ...o };
}

function event(sessionId: string, seq: number, o: Partial<EventRow> = {}): EventRow {
  return {
    sessionId, seq, ts: T0 + seq * 10, type: 'query', data: JSON.stringify({ text: `select ${seq}` }),
    hash: `${sessionId}:${seq}`.padEnd(64, '0'), ...o,
  };
}

function checkpoint(sessionId: string, seq: number, payload = `cp ${sessionId} ${seq}`): CheckpointRow {
  return { sessionId, seq, payload, keyId: 'key_1', signature: `sig(${payload})` };
}

function seal(position: number, sessionId: string, gatewayId = 'gw_a'): SealRow {
  return { gatewayId, position, sessionId, payload: `{"position":${position},"session":"${sessionId}"}`, hash: `sealhash_${position}`, keyId: 'key_1', signature: `sig_${position}` };
}

function batch(o: Partial<RecordBatch>): RecordBatch {
  return { gatewayId: 'gw_a', sessionsStarted: [], events: [], sessionsEnded: [], checkpoints: [], seals: [], ...o };
}

/** Everything of the recordings a store holds, for before/after comparisons. */
async function snapshot(store: Store, sessionIds: string[]): Promise<unknown> {
  const out: Record<string, unknown> = {
    sessions: await store.listSessions({ limit: 10_000 }), open: await store.listOpenSessions(), seals: await store.listSeals(),
  };
  for (const id of sessionIds) {
    out[id] = { events: await store.listEvents(id), checkpoints: await store.listCheckpoints(id), seal: await store.getSeal(id) ?? null };
  }
  return out;
}

// ---- the contract ----------------------------------------------------------------------------

for (const f of FACTORIES) {
  describe(`store contract: ${f.name}`, () => {
    test('identities: create, look up by name and id, list by name, delete', () => withStore(f, async (store) => {
      const zed = identity('zed', { kind: 'human', isAdmin: true, createdAt: MS0 + 5 });
      const amy = identity('amy', { kind: 'service' });
      const bot = identity('bot');
      for (const i of [zed, amy, bot]) await store.createIdentity(i);
      assert.deepEqual(await store.getIdentityByName('zed'), zed);
      assert.deepEqual(await store.getIdentity('id_amy'), amy);
      assert.equal(await store.getIdentityByName('nobody'), undefined);
      assert.equal(await store.getIdentity('id_nobody'), undefined);
      assert.deepEqual(await store.listIdentities(), [amy, bot, zed]);
      await assert.rejects(store.createIdentity(identity('zed', { id: 'id_other' })), 'names are unique');
      await assert.rejects(store.createIdentity({ ...identity('weird'), kind: 'robot' as Identity['kind'] }), 'kind is checked');
      await store.deleteIdentity('id_bot');
      assert.equal(await store.getIdentity('id_bot'), undefined);
      assert.deepEqual((await store.listIdentities()).map((i) => i.name), ['amy', 'zed']);
    }));

    test('tokens: lookup by hash, list, revoke once, revokeTokensOf; removed with their identity', () => withStore(f, async (store) => {
      await store.createIdentity(identity('amy'));
      await store.createIdentity(identity('bob'));
      const t1 = token('t1', 'id_amy', { createdAt: MS0 + 1 });
      const t2 = token('t2', 'id_amy', { createdAt: MS0 + 2 });
      const t3 = token('t3', 'id_amy', { createdAt: MS0 + 3, revokedAt: MS0 + 10 });
      const b1 = token('b1', 'id_bob', { createdAt: MS0 });
      for (const t of [t2, t3, t1, b1]) await store.createToken(t);
      assert.deepEqual(await store.getTokenByHash('hash_t2'), t2);
      assert.deepEqual(await store.getTokenByHash('hash_t3'), t3);
      assert.equal(await store.getTokenByHash('hash_nope'), undefined);
      assert.deepEqual(await store.listTokens('id_amy'), [t1, t2, t3]);
      assert.deepEqual(await store.listTokens(), [b1, t1, t2, t3]);
      await assert.rejects(store.createToken(token('dup', 'id_bob', { tokenHash: 'hash_t1' })), 'token hashes are unique');
      await assert.rejects(store.createToken(token('orphan', 'id_nobody')), 'a token belongs to an identity');

      assert.equal(await store.revokeToken('t1', MS0 + 20), true);
      assert.equal(await store.revokeToken('t1', MS0 + 30), false, 'already revoked');
      assert.equal(await store.revokeToken('nope', MS0 + 30), false);
      assert.equal((await store.getTokenByHash('hash_t1'))?.revokedAt, MS0 + 20, 'the first revocation time stays');

      // t1 and t3 are revoked already: only t2 is revoked now; bob's token is untouched.
      assert.equal(await store.revokeTokensOf('id_amy', MS0 + 40), 1);
      assert.equal(await store.revokeTokensOf('id_amy', MS0 + 50), 0);
      assert.deepEqual((await store.listTokens('id_amy')).map((t) => t.revokedAt), [MS0 + 20, MS0 + 40, MS0 + 10]);
      assert.equal((await store.getTokenByHash('hash_b1'))?.revokedAt, null);

      await store.deleteIdentity('id_amy');
      assert.deepEqual(await store.listTokens(), [b1]);
    }));

    test('connections: sealed secret bytes round-trip exactly, options JSON, list by name, delete', () => withStore(f, async (store) => {
      // Every byte value, including NUL and bytes that are not valid UTF-8.
      const secret = Buffer.concat([Buffer.from([0, 0xff, 0x00, 0x80, 0x5c, 0x27, 0x22]), randomBytes(256), Buffer.from(Array.from({ length: 256 }, (_, i) => i))]);
      const prod = connection('prod', { sealedSecret: secret, port: 6543, options: { sslmode: 'require', recording: 'best-effort', retentionSeconds: 2_592_000 } });
      const dev = connection('dev', { host: 'db.internal', database: 'dev db', username: 'üser' });
      await store.createConnection(prod);
      await store.createConnection(dev);
      const got = await store.getConnectionByName('prod');
      assert.ok(got?.sealedSecret instanceof Buffer, 'the secret comes back as a Buffer');
      assert.equal(Buffer.compare(got.sealedSecret, secret), 0, 'the secret round-trips byte for byte');
      assert.deepEqual(got, prod);
      assert.deepEqual(await store.getConnectionByName('dev'), dev);
      assert.equal((await store.getConnectionByName('dev'))?.sealedSecret, null);
      assert.equal(await store.getConnectionByName('nope'), undefined);
      assert.deepEqual(await store.listConnections(), [dev, prod]);
      await assert.rejects(store.createConnection(connection('prod', { id: 'conn_other' })), 'names are unique');
      await store.deleteConnection('conn_dev');
      assert.deepEqual((await store.listConnections()).map((c) => c.name), ['prod']);
    }));

    test('groups: unique names, members added once, listed by group and identity name; removed with their identity or group', () => withStore(f, async (store) => {
      for (const n of ['amy', 'bob', 'cy']) await store.createIdentity(identity(n));
      const ops = group('ops');
      const dev = group('dev', { createdAt: MS0 + 1 });
      await store.createGroup(ops);
      await store.createGroup(dev);
      await assert.rejects(store.createGroup(group('ops', { id: 'grp_other' })), 'names are unique');
      assert.deepEqual(await store.getGroupByName('ops'), ops);
      assert.equal(await store.getGroupByName('nope'), undefined);
      assert.deepEqual(await store.listGroups(), [dev, ops]);
      assert.equal(await store.addGroupMember('grp_ops', 'id_bob', MS0 + 2), true);
      assert.equal(await store.addGroupMember('grp_ops', 'id_bob', MS0 + 3), false, 'a second membership is a no-op');
      assert.equal(await store.addGroupMember('grp_ops', 'id_amy', MS0 + 4), true);
      assert.equal(await store.addGroupMember('grp_dev', 'id_bob', MS0 + 5), true);
      await assert.rejects(store.addGroupMember('grp_ops', 'id_nobody', MS0), 'members are identities');
      await assert.rejects(store.addGroupMember('grp_nope', 'id_amy', MS0), 'of groups that exist');
      const m = (g: string, i: string, at: number) => ({ groupId: `grp_${g}`, groupName: g, identityId: `id_${i}`, identityName: i, createdAt: at });
      assert.deepEqual(await store.listGroupMembers(), [m('dev', 'bob', MS0 + 5), m('ops', 'amy', MS0 + 4), m('ops', 'bob', MS0 + 2)]);
      assert.deepEqual(await store.listGroupMembers('grp_ops'), [m('ops', 'amy', MS0 + 4), m('ops', 'bob', MS0 + 2)]);
      assert.deepEqual(await store.listGroupsOf('id_bob'), [dev, ops]);
      assert.deepEqual(await store.listGroupsOf('id_cy'), []);
      assert.equal(await store.removeGroupMember('grp_ops', 'id_amy'), true);
      assert.equal(await store.removeGroupMember('grp_ops', 'id_amy'), false);
      await store.deleteIdentity('id_bob');
      assert.deepEqual(await store.listGroupMembers(), []);
      await store.addGroupMember('grp_dev', 'id_cy', MS0);
      await store.deleteGroup('grp_dev');
      assert.deepEqual(await store.listGroupsOf('id_cy'), []);
      assert.deepEqual(await store.listGroups(), [ops]);
    }));

    test('access grants: to identities and groups, on one connection or all; added once; listed with names; removed with subject or connection', () => withStore(f, async (store) => {
      for (const n of ['amy', 'bob']) await store.createIdentity(identity(n));
      for (const n of ['prod', 'dev']) await store.createConnection(connection(n));
      for (const n of ['ops', 'ci']) await store.createGroup(group(n));
      const grants = [
        grant('g1', 'identity', 'bob', 'connect', 'prod', MS0 + 1),
        grant('g2', 'identity', 'amy', 'connect', 'dev', MS0 + 2),
        grant('g3', 'identity', 'amy', 'admin', null, MS0 + 3),
        grant('g4', 'group', 'ops', 'audit', 'prod', MS0 + 4),
        grant('g5', 'group', 'ops', 'audit', null, MS0 + 5),
        grant('g6', 'group', 'ci', 'connect', 'dev', MS0 + 6),
      ];
      for (const g of grants) assert.equal(await store.addAccessGrant(fresh(g)), true, g.id);
      assert.equal(await store.addAccessGrant(fresh({ ...grants[0], id: 'g1b' })), false, 'the same grant again is a no-op');
      assert.equal(await store.addAccessGrant(fresh({ ...grants[2], id: 'g3b' })), false, 'also on every connection (NULL)');
      assert.equal(await store.addAccessGrant(fresh({ ...grants[0], id: 'g1c', action: 'audit' })), true, 'another action is another grant');
      await assert.rejects(store.addAccessGrant(fresh({ ...grants[0], id: 'gx', subjectId: 'id_nobody' })), 'grants reference identities');
      await assert.rejects(store.addAccessGrant(fresh({ ...grants[3], id: 'gy', subjectId: 'grp_nobody' })), 'grants reference groups');
      await assert.rejects(store.addAccessGrant(fresh({ ...grants[0], id: 'gz', connectionId: 'conn_nowhere' })), 'grants reference connections');
      await assert.rejects(store.addAccessGrant(fresh({ ...grants[0], id: 'gw', action: 'own' as AccessGrant['action'] })), 'actions are checked');
      const audit = grant('g1c', 'identity', 'bob', 'audit', 'prod', MS0 + 1);
      // Identities before groups, then name, action, connection ("every connection" first).
      assert.deepEqual(await store.listAccessGrants(), [grants[2], grants[1], audit, grants[0], grants[5], grants[4], grants[3]]);
      assert.deepEqual(await store.listAccessGrantsOf('id_amy', ['ci', 'unknown']), [grants[2], grants[1], grants[5]]);
      assert.deepEqual(await store.listAccessGrantsOf('id_bob', []), [audit, grants[0]]);
      assert.deepEqual(await store.listAccessGrantsOf('id_nobody', ['ops']), [grants[4], grants[3]]);

      assert.equal(await store.removeAccessGrant('identity', 'id_amy', 'admin', null), true);
      assert.equal(await store.removeAccessGrant('identity', 'id_amy', 'admin', null), false);
      assert.equal(await store.removeAccessGrant('group', 'grp_ops', 'audit', 'conn_prod'), true);
      assert.equal(await store.removeAccessGrant('group', 'grp_ops', 'audit', 'conn_dev'), false);
      assert.deepEqual((await store.listAccessGrants()).map((g) => g.id), ['g2', 'g1c', 'g1', 'g6', 'g5']);
      await store.deleteConnection('conn_prod');
      assert.deepEqual((await store.listAccessGrants()).map((g) => g.id), ['g2', 'g6', 'g5']);
      await store.deleteGroup('grp_ops');
      await store.deleteIdentity('id_amy');
      assert.deepEqual((await store.listAccessGrants()).map((g) => g.id), ['g6']);
    }));

    test('session filters: protocol, outcome (open, ended, refused) and when they started', () => withStore(f, async (store) => {
      await store.writeBatch(batch({
        sessionsStarted: [session('f_a', T0), session('f_b', T0 + 10, { protocol: 'ssh' }), session('f_c', T0 + 20), session('f_d', T0 + 30)],
        sessionsEnded: [
          { sessionId: 'f_a', endedAt: T0 + 100, endReason: 'client terminated', eventCount: 0 },
          { sessionId: 'f_d', endedAt: T0 + 31, endReason: 'refused: no grant for this connection', eventCount: 0 },
        ],
      }));
      const ids = async (extra: Partial<Parameters<Store['listSessions']>[0]>) => (await store.listSessions(extra)).map((x) => x.id).filter((id) => id.startsWith('f_'));
      assert.deepEqual(await ids({ protocol: 'ssh' }), ['f_b']);
      assert.deepEqual(await ids({ protocol: 'postgres' }), ['f_d', 'f_c', 'f_a']);
      assert.deepEqual(await ids({ outcome: 'open' }), ['f_c', 'f_b']);
      assert.deepEqual(await ids({ outcome: 'ended' }), ['f_a']);
      assert.deepEqual(await ids({ outcome: 'refused' }), ['f_d']);
      assert.deepEqual(await ids({ startedFrom: T0 + 10, startedTo: T0 + 30 }), ['f_c', 'f_b'], 'from inclusive, to exclusive');
      assert.deepEqual(await ids({ startedFrom: T0 + 10, protocol: 'postgres', outcome: 'open' }), ['f_c'], 'together');
    }));

    test('full-text search: ended sessions are indexed behind the recording; every word must occur; pages by cursor; removed with their session', () => withStore(f, async (store) => {
      const q = (data: unknown) => JSON.stringify(data);
      await store.writeBatch(batch({
        sessionsStarted: [session('s_a', T0), session('s_b', T0 + 10, { protocol: 'ssh' }), session('s_c', T0 + 20)],
        events: [
          event('s_a', 0, { type: 'query', data: q({ text: 'SELECT * FROM invoices WHERE paid' }) }),
          event('s_a', 1, { type: 'result', data: q({ ref: 0, sample: [['ACME Corp', null]], tag: 'SELECT 1' }) }),
          event('s_b', 0, { type: 'ssh.exec', data: q({ ch: 1, command: 'rm -rf /srv/cache' }) }),
          event('s_b', 1, { type: 'file.op', data: q({ ch: 1, op: 'upload', path: '/etc/nginx/nginx.conf' }) }),
          event('s_b', 2, { type: 'session.start', data: q({ text: 'not searchable: not a statement event' }) }),
          event('s_b', 3, { type: 'ssh.exec', data: q({ ch: 2, command: 'shutdown now', policy: { decision: 'deny', rule: 'r', version: 1, reason: 'no' } }) }),
          event('s_b', 4, { type: 'git.push', data: q({ updates: [{ ref: 'refs/heads/main', policy: { decision: 'audit', rule: 'f', version: 1, reason: 'x' } }] }) }),
          event('s_a', 2, { type: 'policy.hold', data: q({ request: 'apr_1', rule: 'h' }) }),
          event('s_c', 0, { type: 'query', data: q({ text: 'DELETE FROM invoices' }) }),
          event('s_a', 3, { type: 'result', data: q({ ref: 0, tag: 'SELECT 1', masked: [{ field: 'rows', column: 'public.users.email', rule: 'pii', count: 1 }] }) }),
          event('s_b', 5, { type: 'result', data: q({ ref: 3, tag: 'SELECT 0', masked: [] }) }),
        ],
        sessionsEnded: [{ sessionId: 's_a', endedAt: T0 + 100, endReason: 'client terminated', eventCount: 4 }, { sessionId: 's_b', endedAt: T0 + 100, endReason: 'client terminated', eventCount: 6 }],
      }));
      const ids = async (search: string, extra: Partial<Parameters<Store['listSessions']>[0]> = {}) => (await store.listSessions({ search, ...extra })).map((x) => x.id);
      assert.deepEqual(await ids('invoices'), [], 'nothing is found before the indexer ran');
      assert.equal(await store.indexSessionsForSearch(10), 2, 'the two ended sessions');
      assert.equal(await store.indexSessionsForSearch(10), 0, 'each once');
      assert.deepEqual(await ids('invoices'), ['s_a'], 'the open session is not indexed yet');
      assert.deepEqual(await ids('INVOICES paid'), ['s_a'], 'case does not matter; every word must occur');
      assert.deepEqual(await ids('invoices unpaid'), []);
      assert.deepEqual(await ids('acme'), ['s_a'], 'result samples are searched');
      assert.deepEqual(await ids('nginx.conf'), ['s_b'], 'file paths');
      assert.deepEqual(await ids('rm -rf'), ['s_b'], 'commands');
      assert.deepEqual(await ids('searchable'), [], 'only statement-like events');
      assert.deepEqual(await ids('" OR 1=1 --'), [], 'search syntax in the words is taken as words');
      assert.deepEqual(await ids(''), [], 'no words: nothing');
      assert.deepEqual(await ids('invoices', { connectionIds: ['conn_other'] }), [], 'the caller\'s audit scope still applies');
      // Review flags, from the same pass: a denial, a flagged ref update, a hold.
      const flagged = async (review: Array<'denied' | 'held' | 'flagged' | 'lost' | 'masked'>) => (await store.listSessions({ review })).map((x) => x.id);
      assert.deepEqual(await flagged(['denied']), ['s_b']);
      assert.deepEqual(await flagged(['denied', 'flagged']), ['s_b'], 'all must hold');
      assert.deepEqual(await flagged(['held']), ['s_a']);
      assert.deepEqual(await flagged(['held', 'denied']), []);
      assert.deepEqual(await flagged(['lost']), []);
      assert.deepEqual(await flagged(['masked']), ['s_a'], 'a result with masked values (an empty note is nothing)');
      assert.deepEqual((await store.getSession('s_b'))!.reviewFlags, ['denied', 'flagged']);
      assert.equal((await store.getSession('s_c'))!.reviewFlags, undefined, 'nothing found (and not reviewed yet)');
      await store.writeBatch(batch({ sessionsEnded: [{ sessionId: 's_c', endedAt: T0 + 200, endReason: 'client terminated', eventCount: 1 }] }));
      await store.indexSessionsForSearch(10);
      assert.deepEqual(await ids('invoices'), ['s_c', 's_a'], 'newest first');
      // Pages: newest first, by cursor.
      assert.deepEqual((await store.listSessions({ limit: 2 })).map((x) => x.id), ['s_c', 's_b']);
      assert.deepEqual((await store.listSessions({ limit: 2, before: { startedAt: T0 + 10, id: 's_b' } })).map((x) => x.id), ['s_a']);
      await store.deleteSessions(['s_a']);
      assert.deepEqual(await ids('invoices'), ['s_c']);
    }));

    test('writeBatch: sessions started, events, ends, checkpoints and seals in one batch', () => withStore(f, async (store) => {
      const a = session('s_a', T0, { identityKind: 'unknown', recordingMode: 'best-effort', applicationName: '' });
      const b = session('s_b', T0 + 1);
      // Event data the array encoding must not disturb: quotes, backslashes, braces, commas,
      // the word NULL, empty strings, non-ASCII, newlines.
      const tricky = [
        event('s_a', 0, { type: 'session.start', data: '{}' }),
        event('s_a', 1, { data: JSON.stringify({ text: 'select \'a\', "b", \\c, {d}, e,f' }) }),
        event('s_a', 2, { type: 'NULL', data: 'NULL' }),
        event('s_a', 3, { data: '', hash: '' }),
        event('s_a', 4, { data: JSON.stringify({ text: 'select \'ünïcødé ✓ 🐘\';\n-- line two\r\n\t' }) }),
      ];
      await store.writeBatch(batch({
        sessionsStarted: [a, b],
        events: [...tricky, event('s_b', 0), event('s_b', 1)],
        sessionsEnded: [{ sessionId: 's_b', endedAt: T0 + 500, endReason: 'client terminated', eventCount: 2 }],
        checkpoints: [checkpoint('s_a', 2), checkpoint('s_b', 1)],
        seals: [seal(1, 's_b')],
      }));
      assert.deepEqual(await store.getSession('s_a'), stored(a));
      assert.deepEqual(await store.getSession('s_b'), stored(b, { endedAt: T0 + 500, endReason: 'client terminated', eventCount: 2 }),
        'a session that starts and ends in one batch is stored ended');
      assert.deepEqual(await store.listEvents('s_a'), tricky);
      assert.deepEqual(await store.listCheckpoints('s_b'), [checkpoint('s_b', 1)]);
      assert.deepEqual(await store.getSeal('s_b'), seal(1, 's_b'));
      assert.equal(await store.getSeal('s_a'), undefined);

      // A later batch: more events, a checkpoint replacing one at the same seq (the newer wins),
      // the end of a session started earlier, and the next seal.
      await store.writeBatch(batch({
        events: [event('s_a', 5), event('s_a', 6, { type: 'session.end' })],
        checkpoints: [checkpoint('s_a', 2, 're-signed'), checkpoint('s_a', 6)],
        sessionsEnded: [{ sessionId: 's_a', endedAt: T0 + 900, endReason: 'interrupted: the gateway stopped', eventCount: 7 }],
        seals: [seal(2, 's_a')],
      }));
      assert.deepEqual(await store.getSession('s_a'), stored(a, { endedAt: T0 + 900, endReason: 'interrupted: the gateway stopped', eventCount: 7 }));
      assert.deepEqual((await store.listEvents('s_a')).map((e) => e.seq), [0, 1, 2, 3, 4, 5, 6]);
      // A live view's next part: only what follows a position.
      assert.deepEqual((await store.listEvents('s_a', 4)).map((e) => e.seq), [5, 6]);
      assert.deepEqual(await store.listEvents('s_a', 6), []);
      assert.deepEqual((await store.listEvents('s_a', -1)).map((e) => e.seq), [0, 1, 2, 3, 4, 5, 6]);
      assert.deepEqual(await store.listEvents('s_a', 4), (await store.listEvents('s_a')).slice(5));
      assert.deepEqual(await store.listCheckpoints('s_a'), [checkpoint('s_a', 2, 're-signed'), checkpoint('s_a', 6)]);
      assert.deepEqual(await store.listSeals(), [seal(1, 's_b'), seal(2, 's_a')]);
      // A checkpoint signed twice for the same head within one batch: the last one wins.
      await store.writeBatch(batch({ checkpoints: [checkpoint('s_a', 6, 'first'), checkpoint('s_a', 6, 'second')] }));
      assert.deepEqual(await store.listCheckpoints('s_a'), [checkpoint('s_a', 2, 're-signed'), checkpoint('s_a', 6, 'second')]);
      await store.writeBatch(batch({})); // an empty batch is fine
    }));

    test('writeBatch retried after an ambiguous commit: the same rows are accepted once, different ones are refused', () => withStore(f, async (store) => {
      // The store committed but the gateway never heard back (connection dropped after COMMIT,
      // writer thread died): it retries the same batch, with more queued behind it.
      const s1 = session('s_r', T0);
      const first = batch({
        sessionsStarted: [s1], events: [event('s_r', 0), event('s_r', 1)],
        sessionsEnded: [{ sessionId: 's_r', endedAt: T0 + 5, endReason: 'done', eventCount: 2 }], seals: [seal(1, 's_r')],
      });
      await store.writeBatch(first);
      const s2 = session('s_q', T0 + 1);
      await store.writeBatch(batch({
        sessionsStarted: [...first.sessionsStarted, s2], events: [...first.events, event('s_q', 0)],
        sessionsEnded: first.sessionsEnded, seals: [...first.seals, seal(2, 's_q')],
      }));
      assert.deepEqual((await store.listEvents('s_r')).map((e) => e.seq), [0, 1]);
      assert.deepEqual((await store.listEvents('s_q')).map((e) => e.seq), [0]);
      assert.deepEqual(await store.listSeals(), [seal(1, 's_r'), seal(2, 's_q')]);
      // Rows that collide but differ (another writer's) are refused, and nothing of the batch stays.
      await assert.rejects(store.writeBatch(batch({ events: [event('s_q', 0, { data: '{"text":"forged"}' }), event('s_q', 1)] })), /different event #0/);
      assert.deepEqual((await store.listEvents('s_q')).map((e) => e.seq), [0]);
      await assert.rejects(store.writeBatch(batch({ seals: [{ ...seal(2, 's_q'), hash: 'other' }] })), /different seal/);
    }));

    test('writeBatch is atomic: a batch that violates a constraint leaves nothing of itself behind', () => withStore(f, async (store) => {
      const s1 = session('s_1', T0);
      await store.writeBatch(batch({ sessionsStarted: [s1], events: [event('s_1', 0), event('s_1', 1)], checkpoints: [checkpoint('s_1', 1)] }));
      const s2 = session('s_2', T0 + 10);
      await store.writeBatch(batch({
        sessionsStarted: [s2], events: [event('s_2', 0)],
        sessionsEnded: [{ sessionId: 's_2', endedAt: T0 + 20, endReason: 'done', eventCount: 1 }], seals: [seal(1, 's_2')],
      }));
      const ids = ['s_1', 's_2', 's_3'];
      const before = await snapshot(store, ids);

      // Everything a batch can carry, and one bad row in it.
      const good = (): RecordBatch => batch({
        sessionsStarted: [session('s_3', T0 + 30)],
        events: [event('s_3', 0), event('s_3', 1), event('s_1', 2), event('s_1', 3)],
        sessionsEnded: [{ sessionId: 's_1', endedAt: T0 + 40, endReason: 'client terminated', eventCount: 4 }],
        checkpoints: [checkpoint('s_3', 1), checkpoint('s_1', 1, 'replaced')],
        seals: [seal(2, 's_1')],
      });
      const bad: Array<[string, (b: RecordBatch) => void]> = [
        ['an event duplicating a stored (session_id, seq)', (b) => { b.events.push(event('s_1', 1, { data: 'forged' })); }],
        ['two events with the same (session_id, seq) in the batch', (b) => { b.events.push(event('s_3', 0, { data: 'again' })); }],
        ['a session id that exists', (b) => { b.sessionsStarted.push(session('s_2', T0 + 50)); }],
        ['a seal position that is taken', (b) => { b.seals[0] = seal(1, 's_1'); }],
        ['a second seal for a sealed session', (b) => { b.seals.push(seal(3, 's_2')); }],
      ];
      for (const [what, spoil] of bad) {
        const b = good();
        spoil(b);
        await assert.rejects(store.writeBatch(b), `rejected: ${what}`);
        assert.deepEqual(await snapshot(store, ids), before, `nothing of the batch with ${what} is stored`);
      }
      // The recorder retries what failed once the cause is gone: the same rows, now without the bad one.
      await store.writeBatch(good());
      assert.equal((await store.getSession('s_3'))?.startedAt, T0 + 30);
      assert.deepEqual((await store.listEvents('s_1')).map((e) => e.seq), [0, 1, 2, 3]);
      assert.deepEqual((await store.listEvents('s_3')).map((e) => e.seq), [0, 1]);
      assert.equal((await store.getSession('s_1'))?.endReason, 'client terminated');
      assert.deepEqual(await store.listCheckpoints('s_1'), [checkpoint('s_1', 1, 'replaced')]);
      assert.deepEqual((await store.listSeals()).map((s) => [s.position, s.sessionId]), [[1, 's_2'], [2, 's_1']]);
    }));

    test('session owners and gateway leases: takeOverSessions takes only own or lapsed gateways\' sessions; a batch for a session owned elsewhere is refused whole', () => withStore(f, async (store) => {
      const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
      await store.startGatewayLease('gw_a');
      await store.startGatewayLease('gw_b');
      await store.writeBatch(batch({ sessionsStarted: [session('s_a1', T0), session('s_a2', T0 + 1)], events: [event('s_a1', 0), event('s_a2', 0)] }));
      await store.writeBatch(batch({ gatewayId: 'gw_b', sessionsStarted: [session('s_b1', T0 + 2)], events: [event('s_b1', 0)] }));
      // A session recorded before sessions had owners, and one ended already.
      await store.writeBatch(batch({ gatewayId: '', sessionsStarted: [session('s_old', T0 - 5)] }));
      await store.writeBatch(batch({ gatewayId: 'gw_b', sessionsStarted: [session('s_b0', T0 - 1)],
        sessionsEnded: [{ sessionId: 's_b0', endedAt: T0, endReason: 'done', eventCount: 0 }] }));
      assert.equal((await store.getSession('s_a1'))?.gatewayId, 'gw_a');
      assert.equal((await store.getSession('s_b1'))?.gatewayId, 'gw_b');

      // Every lease is fresh: gw_c takes only the session nobody owns; gw_a restarting takes its own too.
      await store.startGatewayLease('gw_c');
      const byC = await store.takeOverSessions('gw_c', { leaseMs: 60_000, own: false });
      assert.deepEqual(byC.map((t) => [t.session.id, t.previousOwner, t.session.gatewayId]), [['s_old', '', 'gw_c']]);
      const byA = await store.takeOverSessions('gw_a', { leaseMs: 60_000, own: true });
      assert.deepEqual(byA.map((t) => [t.session.id, t.previousOwner]), [['s_a1', 'gw_a'], ['s_a2', 'gw_a']]);
      assert.deepEqual(await store.takeOverSessions('gw_a', { leaseMs: 60_000, own: false }), [], 'not its own without own, nor live gateways\'');

      // gw_b stops renewing, gw_a renews: past the lease, gw_c takes gw_b's open sessions, and only those.
      await sleep(1200);
      await store.renewGatewayLease('gw_a');
      await store.renewGatewayLease('gw_c');
      const lapsed = await store.takeOverSessions('gw_c', { leaseMs: 1000, own: false });
      assert.deepEqual(lapsed.map((t) => [t.session.id, t.previousOwner, t.session.gatewayId, t.session.endedAt]), [['s_b1', 'gw_b', 'gw_c', null]]);
      assert.deepEqual(await store.takeOverSessions('gw_a', { leaseMs: 1000, own: false }), [], 'taken once');
      assert.deepEqual((await store.sessionsOwnedElsewhere('gw_b', ['s_b1', 's_b0', 's_a1', 's_none'])).sort((x, y) => (x.sessionId < y.sessionId ? -1 : 1)),
        [{ sessionId: 's_a1', gatewayId: 'gw_a' }, { sessionId: 's_b1', gatewayId: 'gw_c' }]);

      // gw_b comes back: a batch that adds to a session it lost is refused whole, naming the new owner.
      const ids = ['s_b1', 's_b2', 's_a1'];
      const before = await snapshot(store, ids);
      const late = batch({
        gatewayId: 'gw_b', sessionsStarted: [session('s_b2', T0 + 10)], events: [event('s_b2', 0), event('s_b1', 1)],
        sessionsEnded: [{ sessionId: 's_b1', endedAt: T0 + 20, endReason: 'client terminated', eventCount: 2 }],
        checkpoints: [checkpoint('s_b1', 1)], seals: [seal(1, 's_b1', 'gw_b')],
      });
      const refused = await store.writeBatch(late).then(() => null, (err: unknown) => err);
      assert.ok(refused instanceof SessionsTakenOverError, `refused as taken over: ${String(refused)}`);
      assert.deepEqual(refused.sessions, [{ sessionId: 's_b1', gatewayId: 'gw_c' }]);
      assert.deepEqual(await snapshot(store, ids), before, 'nothing of the refused batch is stored');
      // Without the lost session the rest is written; the new owner writes to what it took over.
      await store.writeBatch(batch({ gatewayId: 'gw_b', sessionsStarted: late.sessionsStarted, events: [event('s_b2', 0)] }));
      assert.equal((await store.getSession('s_b2'))?.gatewayId, 'gw_b');
      await store.writeBatch(batch({
        gatewayId: 'gw_c', events: [event('s_b1', 1, { type: 'session.end' })],
        sessionsEnded: [{ sessionId: 's_b1', endedAt: T0 + 30, endReason: 'interrupted', eventCount: 2 }], seals: [seal(1, 's_b1', 'gw_c')],
      }));
      assert.equal((await store.getSession('s_b1'))?.endReason, 'interrupted');
      // A renewed lease is live again: its sessions stay its own.
      await store.writeBatch(batch({ gatewayId: 'gw_b', sessionsStarted: [session('s_b3', T0 + 40)] }));
      await store.renewGatewayLease('gw_b');
      await store.renewGatewayLease('gw_a');
      assert.deepEqual(await store.takeOverSessions('gw_c', { leaseMs: 1000, own: false }), []);
    }));

    test('listSessions: newest first, filters by identity, connection and connection ids, limit (default 100)', () => withStore(f, async (store) => {
      const rows: SessionRow[] = [];
      for (let i = 0; i < 105; i++) {
        rows.push(session(`s_${String(i).padStart(3, '0')}`, T0 + i * 1000 + (i % 7), {
          identityId: `id_${i % 3}`, identityName: ['amy', 'bob', 'cy'][i % 3], connectionId: `conn_${i % 2}`, connectionName: i % 2 ? 'prod' : 'dev',
        }));
      }
      // Written out of order, across batches, some ended.
      const shuffled = [...rows].sort((x, y) => (x.id.charCodeAt(4) * 31 + x.startedAt) % 97 - (y.id.charCodeAt(4) * 31 + y.startedAt) % 97);
      await store.writeBatch(batch({ sessionsStarted: shuffled.slice(0, 60) }));
      await store.writeBatch(batch({
        sessionsStarted: shuffled.slice(60),
        sessionsEnded: rows.filter((_, i) => i % 5 === 0).map((s) => ({ sessionId: s.id, endedAt: s.startedAt + 50, endReason: 'done', eventCount: 0 })),
      }));
      const newestFirst = [...rows].sort((x, y) => y.startedAt - x.startedAt);
      const all = await store.listSessions({});
      assert.equal(all.length, 100, 'default limit 100');
      assert.deepEqual(all.map((s) => s.id), newestFirst.slice(0, 100).map((s) => s.id));
      const ended = new Set(rows.filter((_, i) => i % 5 === 0).map((s) => s.id));
      for (const s of all) assert.equal(s.endedAt === null, !ended.has(s.id), `${s.id} ended state`);
      assert.deepEqual((await store.listSessions({ limit: 1_000 })).map((s) => s.id), newestFirst.map((s) => s.id));
      assert.deepEqual((await store.listSessions({ limit: Number.MAX_SAFE_INTEGER })).length, 105, 'the store verifier lists with MAX_SAFE_INTEGER');
      assert.deepEqual((await store.listSessions({ limit: 3 })).map((s) => s.id), newestFirst.slice(0, 3).map((s) => s.id));
      assert.deepEqual((await store.listSessions({ identity: 'bob', limit: 1_000 })).map((s) => s.id),
        newestFirst.filter((s) => s.identityName === 'bob').map((s) => s.id));
      assert.deepEqual((await store.listSessions({ connection: 'prod', limit: 1_000 })).map((s) => s.id),
        newestFirst.filter((s) => s.connectionName === 'prod').map((s) => s.id));
      assert.deepEqual((await store.listSessions({ identity: 'cy', connection: 'dev', limit: 4 })).map((s) => s.id),
        newestFirst.filter((s) => s.identityName === 'cy' && s.connectionName === 'dev').slice(0, 4).map((s) => s.id));
      assert.deepEqual(await store.listSessions({ identity: 'nobody' }), []);
      // The sessions an auditor may read: by connection id, within the limit.
      assert.deepEqual((await store.listSessions({ connectionIds: ['conn_1', 'conn_9'], limit: 5 })).map((s) => s.id),
        newestFirst.filter((s) => s.connectionId === 'conn_1').slice(0, 5).map((s) => s.id));
      assert.deepEqual((await store.listSessions({ connectionIds: ['conn_0'], identity: 'amy', limit: 1_000 })).map((s) => s.id),
        newestFirst.filter((s) => s.connectionId === 'conn_0' && s.identityName === 'amy').map((s) => s.id));
      assert.deepEqual(await store.listSessions({ connectionIds: [] }), [], 'no connections: no sessions');
    }));

    test('workload identities: claims, auth source and groups round-trip; ordinary identities have none', () => withStore(f, async (store) => {
      const run = identity('gh-org-app-101-1-x7k2q', {
        claims: { iss: 'https://token.actions.example', sub: 'repo:org/app:ref:refs/heads/main', repository: 'org/app', run_id: '101', 'odd "key"': 'ünï \\ "q"' },
        authSource: 'oidc-exchange:github-app', externalGroups: ['ci', 'deployers'],
      });
      const plain = identity('plain');
      await store.createIdentity(run);
      await store.createIdentity(plain);
      assert.deepEqual(await store.getIdentityByName('gh-org-app-101-1-x7k2q'), run);
      assert.deepEqual(await store.getIdentity('id_plain'), plain, 'no claims, source or groups keys at all');
      assert.deepEqual(await store.listIdentities(), [run, plain]);
    }));

    test('sessions keep a copy of the claims and the auth method; listSessions filters by kind and claims within the limit', () => withStore(f, async (store) => {
      const claimsOf = (run: string, repo = 'org/app') => ({ repository: repo, run_id: run, workflow: 'deploy "prod"', 'job.name': 'a:b' });
      const rows = [
        session('s_1', T0 + 1, { identityKind: 'agent', identityClaims: claimsOf('101'), authMethod: 'token' }),
        session('s_2', T0 + 2, { identityKind: 'agent', identityClaims: claimsOf('102'), authMethod: 'token (password)' }),
        session('s_3', T0 + 3, { identityKind: 'agent', identityClaims: claimsOf('101'), authMethod: 'publickey' }),
        session('s_4', T0 + 4, { identityKind: 'human', authMethod: 'token' }),
        session('s_5', T0 + 5, { identityKind: 'agent', identityClaims: claimsOf('103', 'org/other'), authMethod: 'token (http basic)' }),
        session('s_6', T0 + 6, { identityKind: 'unknown' }),
      ];
      await store.writeBatch(batch({ sessionsStarted: rows.slice(0, 3) }));
      // A session that starts and ends in one batch takes the other path of the batch statement.
      await store.writeBatch(batch({ sessionsStarted: rows.slice(3), sessionsEnded: [{ sessionId: 's_5', endedAt: T0 + 50, endReason: 'done', eventCount: 0 }] }));
      assert.deepEqual(await store.getSession('s_1'), stored(rows[0]));
      assert.deepEqual(await store.getSession('s_4'), stored(rows[3], { identityClaims: null }));
      assert.deepEqual(await store.getSession('s_5'), stored(rows[4], { endedAt: T0 + 50, endReason: 'done' }));
      assert.deepEqual(await store.getSession('s_6'), stored(rows[5]), 'no claims, no auth method: both null');
      const ids = async (filter: Parameters<Store['listSessions']>[0]) => (await store.listSessions(filter)).map((s) => s.id);
      assert.deepEqual(await ids({ kind: 'agent' }), ['s_5', 's_3', 's_2', 's_1']);
      assert.deepEqual(await ids({ kind: 'human' }), ['s_4']);
      assert.deepEqual(await ids({ claims: { run_id: '101' } }), ['s_3', 's_1']);
      assert.deepEqual(await ids({ claims: { run_id: '101' }, limit: 1 }), ['s_3'], 'the limit applies after the claim filter');
      assert.deepEqual(await ids({ claims: { repository: 'org/app', run_id: '102' } }), ['s_2'], 'every claim must match');
      assert.deepEqual(await ids({ claims: { repository: 'org/app', run_id: '103' } }), []);
      assert.deepEqual(await ids({ claims: { workflow: 'deploy "prod"', 'job.name': 'a:b' }, kind: 'agent', limit: 2 }), ['s_5', 's_3']);
      assert.deepEqual(await ids({ claims: { run_id: '10' } }), [], 'exact values, no prefix match');
      assert.deepEqual(await ids({ claims: { nope: '101' } }), []);
      await assert.rejects(store.listSessions({ claims: { 'a"b': 'x' } }), /invalid claim name/);
    }));

    test('getSession, listEvents in seq order, lastEvent, listOpenSessions oldest first', () => withStore(f, async (store) => {
      const late = session('s_late', T0 + 300);
      const early = session('s_early', T0 + 100);
      const done = session('s_done', T0 + 200);
      // Events written out of seq order and across batches come back in seq order.
      await store.writeBatch(batch({ sessionsStarted: [late, early, done], events: [event('s_early', 2), event('s_early', 0), event('s_done', 0)] }));
      await store.writeBatch(batch({
        events: [event('s_early', 1), event('s_early', 10)],
        sessionsEnded: [{ sessionId: 's_done', endedAt: T0 + 250, endReason: 'done', eventCount: 1 }],
      }));
      assert.deepEqual(await store.getSession('s_early'), stored(early));
      assert.equal(await store.getSession('s_nope'), undefined);
      assert.deepEqual(await store.listEvents('s_early'), [event('s_early', 0), event('s_early', 1), event('s_early', 2), event('s_early', 10)]);
      assert.deepEqual(await store.listEvents('s_nope'), []);
      assert.deepEqual(await store.lastEvent('s_early'), event('s_early', 10));
      assert.deepEqual(await store.lastEvent('s_done'), event('s_done', 0));
      assert.equal(await store.lastEvent('s_late'), undefined, 'no events yet');
      assert.deepEqual((await store.listOpenSessions()).map((s) => s.id), ['s_early', 's_late']);
      assert.deepEqual(await store.listOpenSessions(), [stored(early), stored(late)]);
    }));

    test('a 5,000-event batch is written in one call and read back in order', () => withStore(f, async (store) => {
      const sessions = Array.from({ length: 10 }, (_, i) => session(`s_big_${i}`, T0 + i));
      await store.writeBatch(batch({ sessionsStarted: sessions }));
      const data = JSON.stringify({ text: 'SELECT abalance FROM pgbench_accounts WHERE aid = $1', params: ['48213'] });
      const events = Array.from({ length: 5000 }, (_, k) => event(`s_big_${k % 10}`, Math.floor(k / 10), { data, ts: T0 + k }));
      const t0 = performance.now();
      await store.writeBatch(batch({ events }));
      const ms = performance.now() - t0;
      process.stderr.write(`# ${f.name}: 5,000-event batch in ${ms.toFixed(1)} ms (${Math.round(5000 / ms * 1000)} events/s)\n`);
      for (let i = 0; i < 10; i++) {
        const got = await store.listEvents(`s_big_${i}`);
        assert.equal(got.length, 500);
        assert.deepEqual(got, events.filter((e) => e.sessionId === `s_big_${i}`));
      }
    }));

    test('checkpoints and the seal logs: listCheckpoints, getSeal, listSeals by gateway and position, lastSeal per gateway', () => withStore(f, async (store) => {
      assert.equal(await store.lastSeal('gw_a'), undefined);
      assert.deepEqual(await store.listSeals(), []);
      const ss = ['s_1', 's_2', 's_3', 's_4'].map((id, i) => session(id, T0 + i));
      await store.writeBatch(batch({ sessionsStarted: ss, checkpoints: [checkpoint('s_1', 9), checkpoint('s_1', 3), checkpoint('s_2', 0)] }));
      await store.writeBatch(batch({ seals: [seal(2, 's_3'), seal(1, 's_1')] }));
      await store.writeBatch(batch({ seals: [seal(3, 's_2'), seal(4, 'tombstone:1')] }));
      // A second gateway sharing the store keeps its own log, with its own positions.
      await store.writeBatch(batch({ seals: [seal(1, 's_9', 'gw_b')] }));
      assert.deepEqual(await store.listCheckpoints('s_1'), [checkpoint('s_1', 3), checkpoint('s_1', 9)]);
      assert.deepEqual(await store.listCheckpoints('s_4'), []);
      assert.deepEqual(await store.getSeal('s_3'), seal(2, 's_3'));
      assert.equal(await store.getSeal('s_4'), undefined);
      assert.deepEqual(await store.listSeals(), [seal(1, 's_1'), seal(2, 's_3'), seal(3, 's_2'), seal(4, 'tombstone:1'), seal(1, 's_9', 'gw_b')]);
      assert.deepEqual(await store.lastSeal('gw_a'), seal(4, 'tombstone:1'));
      assert.deepEqual(await store.lastSeal('gw_b'), seal(1, 's_9', 'gw_b'));
      assert.equal(await store.lastSeal('gw_c'), undefined);
    }));

    test('signing keys: saved once per key id, listed oldest first', () => withStore(f, async (store) => {
      assert.deepEqual(await store.listSigningKeys(), []);
      const k2 = { keyId: 'key_b', publicKeyPem: '-----BEGIN PUBLIC KEY-----\nBBBB\n-----END PUBLIC KEY-----\n', createdAt: MS0 + 2 };
      const k1 = { keyId: 'key_a', publicKeyPem: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n', createdAt: MS0 + 1 };
      await store.saveSigningKey(k2);
      await store.saveSigningKey(k1);
      // Every start registers its key again: the first registration stays.
      await store.saveSigningKey({ ...k2, createdAt: MS0 + 99, publicKeyPem: 'other' });
      assert.deepEqual(await store.listSigningKeys(), [k1, k2]);
    }));

    test('retention: legal hold, listExpiredSessions, deleteSessions never removes a held session', () => withStore(f, async (store) => {
      const old1 = session('s_old1', T0, { connectionId: 'conn_a' });
      const old2 = session('s_old2', T0 + 10, { connectionId: 'conn_a' });
      const held = session('s_held', T0 + 5, { connectionId: 'conn_a' });
      const recent = session('s_recent', T0 + 20, { connectionId: 'conn_a' });
      const open = session('s_open', T0 + 1, { connectionId: 'conn_a' });
      const other = session('s_other', T0 + 2, { connectionId: 'conn_b' });
      const all = [old1, old2, held, recent, open, other];
      const ends = [
        { sessionId: 's_old2', endedAt: T0 + 1_000, endReason: 'done', eventCount: 2 },
        { sessionId: 's_old1', endedAt: T0 + 1_500, endReason: 'done', eventCount: 2 },
        { sessionId: 's_held', endedAt: T0 + 1_200, endReason: 'done', eventCount: 2 },
        { sessionId: 's_recent', endedAt: T0 + 5_000, endReason: 'done', eventCount: 2 },
        { sessionId: 's_other', endedAt: T0 + 1_000, endReason: 'done', eventCount: 2 },
      ];
      await store.writeBatch(batch({
        sessionsStarted: all,
        events: all.flatMap((s) => [event(s.id, 0), event(s.id, 1)]),
        checkpoints: all.map((s) => checkpoint(s.id, 1)),
      }));
      await store.writeBatch(batch({ sessionsEnded: ends, seals: ends.map((e, i) => seal(i + 1, e.sessionId)) }));

      assert.equal(await store.setLegalHold('s_held', true), true);
      assert.equal(await store.setLegalHold('s_nope', true), false);
      assert.equal((await store.getSession('s_held'))?.legalHold, true);
      assert.equal((await store.getSession('s_old1'))?.legalHold, false);
      assert.deepEqual((await store.listSessions({ limit: 10 })).find((s) => s.id === 's_held')?.legalHold, true);

      const cutoff = T0 + 2_000;
      const expired = await store.listExpiredSessions('conn_a', cutoff);
      assert.deepEqual(expired.map((s) => s.id), ['s_old1', 's_old2'], 'ended before the cutoff, not held, not open, this connection, oldest first');
      assert.deepEqual(expired[0], stored(old1, { endedAt: T0 + 1_500, endReason: 'done', eventCount: 2 }));
      assert.deepEqual((await store.listExpiredSessions('conn_a', T0 + 1_500)).map((s) => s.id), ['s_old2'], 'strictly before');
      assert.deepEqual((await store.listExpiredSessions('conn_b', cutoff)).map((s) => s.id), ['s_other']);
      assert.deepEqual(await store.listExpiredSessions('conn_none', cutoff), []);

      // The held session is passed too (as if it were placed on hold after it was listed).
      const sealsBefore = await store.listSeals();
      await store.deleteSessions(['s_old1', 's_old2', 's_held', 's_never_existed']);
      assert.equal(await store.getSession('s_old1'), undefined);
      assert.equal(await store.getSession('s_old2'), undefined);
      assert.deepEqual(await store.listEvents('s_old1'), []);
      assert.deepEqual(await store.listCheckpoints('s_old2'), []);
      assert.deepEqual(await store.listSeals(), sealsBefore, 'seals stay: they are links of the seal log');
      assert.deepEqual(await store.getSession('s_held'), stored(held, { endedAt: T0 + 1_200, endReason: 'done', eventCount: 2, legalHold: true }));
      assert.deepEqual(await store.listEvents('s_held'), [event('s_held', 0), event('s_held', 1)], 'a held session keeps its events');
      assert.deepEqual(await store.listCheckpoints('s_held'), [checkpoint('s_held', 1)]);
      assert.deepEqual((await store.listSessions({})).map((s) => s.id).sort(), ['s_held', 's_open', 's_other', 's_recent']);
      assert.deepEqual(await store.listEvents('s_other'), [event('s_other', 0), event('s_other', 1)], 'other sessions are untouched');
      await store.deleteSessions([]);

      // Lifting the hold makes it expire like any other.
      assert.equal(await store.setLegalHold('s_held', false), true);
      assert.deepEqual((await store.listExpiredSessions('conn_a', cutoff)).map((s) => s.id), ['s_held']);
      await store.deleteSessions(['s_held']);
      assert.equal(await store.getSession('s_held'), undefined);
      assert.deepEqual(await store.listEvents('s_held'), []);
    }));

    test('migrations: versioned, applied once; opening the store again changes nothing', () => withStore(f, async (store, h) => {
      const versions = Array.from({ length: f.migrationCount }, (_, i) => i + 1);
      assert.deepEqual(await h.migrations(), versions);
      await store.createIdentity(identity('keeper'));
      await store.writeBatch(batch({ sessionsStarted: [session('s_kept', T0)], events: [event('s_kept', 0)] }));
      const again = await h.reopen();
      const third = await h.reopen();
      assert.deepEqual(await h.migrations(), versions);
      assert.deepEqual(await again.getIdentityByName('keeper'), identity('keeper'));
      assert.deepEqual(await third.listEvents('s_kept'), [event('s_kept', 0)]);
    }));
  });
}

// ---- migration 9: the connect grants of before become access grants -----------------------------

describe('migration 9 (groups and access)', () => {
  // A store as version 8 left it: two identities, two connections, three connect grants.
  const SEED = `INSERT INTO identities (id, name, kind, created_at) VALUES ('id_amy', 'amy', 'human', 1), ('id_bob', 'bob', 'agent', 2);
    INSERT INTO connections (id, name, type, host, port, database, username, created_at) VALUES
      ('conn_dev', 'dev', 'postgres', 'h', 5432, 'd', 'u', 3), ('conn_prod', 'prod', 'postgres', 'h', 5432, 'd', 'u', 4);
    INSERT INTO grants (identity_id, connection_id, created_at) VALUES ('id_amy', 'conn_dev', 10), ('id_amy', 'conn_prod', 11), ('id_bob', 'conn_prod', 12);`;

  async function expectMigrated(store: Store): Promise<void> {
    const view = (await store.listAccessGrants()).map(({ id, ...g }) => ({ ...g, idShape: /^grant_[0-9a-f]{20}$/.test(id) }));
    const expected = (subject: string, conn: string, createdAt: number) => ({
      subjectType: 'identity', subjectId: `id_${subject}`, subjectName: subject, action: 'connect', connectionId: `conn_${conn}`, connectionName: conn, createdAt, expiresAt: null, idShape: true,
    });
    assert.deepEqual(view, [expected('amy', 'dev', 10), expected('amy', 'prod', 11), expected('bob', 'prod', 12)]);
    const ids = (await store.listAccessGrants()).map((g) => g.id);
    assert.equal(new Set(ids).size, 3, 'distinct ids');
  }

  test('sqlite', async () => {
    const dir = mkdtempSync(path.join(work, 'migrate-'));
    const file = path.join(dir, 'gatehouse.db');
    const db = new DatabaseSync(file);
    db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    SQLITE_MIGRATIONS.slice(0, 8).forEach((m, i) => { db.exec(m); db.prepare('INSERT INTO schema_migrations VALUES (?, 0)').run(i + 1); });
    db.exec(SEED);
    db.close();
    const store = new SqliteStore(file);
    try {
      await expectMigrated(store);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('postgres', async () => {
    const name = await freshDatabase();
    const steps = POSTGRES_MIGRATIONS.slice(0, 8).map((m, i) => `${m};\nINSERT INTO schema_migrations VALUES (${i + 1}, 0);`).join('\n');
    await cluster.sql(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL);\n${steps}\n${SEED}`, name);
    const store = await PostgresStore.open(pgUrl(name));
    try {
      await expectMigrated(store);
    } finally {
      await store.close();
      await cluster.sql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE);`);
    }
  });
});

// ---- PostgreSQL only -------------------------------------------------------------------------

describe('postgres store', () => {
  test('has a migration for every SQLite migration (same schema versions)', () => {
    assert.equal(POSTGRES_MIGRATIONS.length, SQLITE_MIGRATIONS.length);
  });

  test('several gateways opening a new database at once migrate it exactly once', async () => {
    const db = await freshDatabase();
    const stores = await Promise.all(Array.from({ length: 6 }, () => PostgresStore.open(pgUrl(db))));
    try {
      assert.equal(await cluster.sql('SELECT string_agg(version::text, \',\' ORDER BY version) FROM schema_migrations;', db),
        POSTGRES_MIGRATIONS.map((_, i) => i + 1).join(','));
      await stores[0].createIdentity(identity('shared'));
      assert.deepEqual(await stores[5].getIdentityByName('shared'), identity('shared'));
    } finally {
      for (const s of stores) await s.close();
      await cluster.sql(`DROP DATABASE ${db} WITH (FORCE);`);
    }
  });

  test('a batch is one transaction, whatever its size', async () => {
    const db = await freshDatabase();
    const store = await PostgresStore.open(pgUrl(db));
    try {
      const xid = async (): Promise<number> => Number((await store.pool.query('SELECT pg_current_xact_id()::text::bigint AS x')).rows[0].x);
      const s = session('s_tx', T0);
      const x0 = await xid();
      await store.writeBatch(batch({
        sessionsStarted: [s], events: Array.from({ length: 3000 }, (_, i) => event('s_tx', i)),
        sessionsEnded: [{ sessionId: 's_tx', endedAt: T0 + 1, endReason: 'done', eventCount: 3000 }],
        checkpoints: [checkpoint('s_tx', 2999)], seals: [seal(1, 's_tx')],
      }));
      const x1 = await xid();
      // x0 and x1 are the probes' own transaction ids: exactly one was assigned in between.
      assert.equal(x1 - x0, 2, `transaction ids used by the batch: ${x1 - x0 - 1}`);
      assert.equal((await store.listEvents('s_tx')).length, 3000);
    } finally {
      await store.close();
      await cluster.sql(`DROP DATABASE ${db} WITH (FORCE);`);
    }
  });

  test('a takeover and a batch of the previous owner never interleave: whichever locks the session first finishes first', async () => {
    const db = await freshDatabase();
    const store = await PostgresStore.open(pgUrl(db));
    const other = new (await import('pg')).default.Client({ connectionString: pgUrl(db) });
    await other.connect();
    try {
      await store.startGatewayLease('gw_a');
      await store.writeBatch(batch({ sessionsStarted: [session('s_1', T0), session('s_2', T0 + 1)], events: [event('s_1', 0), event('s_2', 0)] }));
      await store.pool.query("UPDATE gateways SET heartbeat_at = 0 WHERE id = 'gw_a'"); // gw_a's lease lapsed

      // A batch of gw_a holds s_1 (as writeBatch does, FOR SHARE) and is still writing: the takeover waits for it.
      await other.query('BEGIN');
      await other.query("SELECT 1 FROM sessions WHERE id = 's_1' FOR SHARE");
      let tookOver = false;
      const takeover = store.takeOverSessions('gw_b', { leaseMs: 1000, own: false }).then((t) => { tookOver = true; return t; });
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(tookOver, false, 'the takeover waits for the batch');
      await other.query("INSERT INTO events (session_id, seq, ts, type, data, hash) VALUES ('s_1', 1, 1, 'query', '{}', 'h')");
      await other.query('COMMIT');
      assert.deepEqual((await takeover).map((t) => t.session.id), ['s_1', 's_2']);
      assert.equal((await store.lastEvent('s_1'))?.seq, 1, 'the new owner sees what the batch wrote');

      // The other way round: a takeover of s_2 is committing while gw_a writes to it; the batch
      // waits, then finds the new owner and writes nothing.
      await other.query('BEGIN');
      await other.query("UPDATE sessions SET gateway_id = 'gw_c' WHERE id = 's_2'");
      let wrote = false;
      const write = store.writeBatch(batch({ events: [event('s_2', 1)] })).then(() => { wrote = true; }, (err: unknown) => err);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(wrote, false, 'the batch waits for the takeover');
      await other.query('COMMIT');
      const refused = await write;
      assert.ok(refused instanceof SessionsTakenOverError, `refused: ${String(refused)}`);
      assert.deepEqual(refused.sessions, [{ sessionId: 's_2', gatewayId: 'gw_c' }]);
      assert.deepEqual((await store.listEvents('s_2')).map((e) => e.seq), [0]);
    } finally {
      await other.end();
      await store.close();
      await cluster.sql(`DROP DATABASE ${db} WITH (FORCE);`);
    }
  });

  test('open() fails clearly when the server is unreachable, and when the URL names no database', async () => {
    const port = await freePort();
    await assert.rejects(PostgresStore.open(`postgres://postgres@127.0.0.1:${port}/nowhere`), /ECONNREFUSED/);
    await assert.rejects(PostgresStore.open(pgUrl('no_such_database')), /database "no_such_database" does not exist/);
  });

  test('a failed batch does not break the store: later batches and reads work', async () => {
    const db = await freshDatabase();
    const store = await PostgresStore.open(pgUrl(db), { max: 1 });
    try {
      await store.writeBatch(batch({ sessionsStarted: [session('s_x', T0)], events: [event('s_x', 0)] }));
      await assert.rejects(store.writeBatch(batch({ events: [event('s_x', 0, { data: '{"text":"other"}' })] })), /different event/);
      // With a single pooled connection, the next statement runs on the one that just failed.
      await store.writeBatch(batch({ events: [event('s_x', 1)] }));
      assert.deepEqual((await store.listEvents('s_x')).map((e) => e.seq), [0, 1]);
    } finally {
      await store.close();
      await cluster.sql(`DROP DATABASE ${db} WITH (FORCE);`);
    }
  });
});

// ---- configuration ---------------------------------------------------------------------------

describe('store configuration', () => {
  test('gateway lease: 60 s renewed every 10 s by default; lease: in gatehouse.yaml, GATEHOUSE_LEASE_MS and GATEHOUSE_HEARTBEAT_MS; at least three heartbeats', () => {
    const dir = mkdtempSync(path.join(work, 'config-'));
    const file = path.join(dir, 'gatehouse.yaml');
    writeFileSync(file, 'lease:\n  duration_ms: 30000\n  heartbeat_ms: 5000\n');
    assert.deepEqual(loadConfig({}, {}).lease, { durationMs: 60_000, heartbeatMs: 10_000 });
    assert.deepEqual(loadConfig({ config: file }, {}).lease, { durationMs: 30_000, heartbeatMs: 5000 });
    assert.deepEqual(loadConfig({ config: file }, { GATEHOUSE_LEASE_MS: '3000', GATEHOUSE_HEARTBEAT_MS: '300' }).lease, { durationMs: 3000, heartbeatMs: 300 });
    assert.throws(() => loadConfig({}, { GATEHOUSE_LEASE_MS: '20000' }), /lease.duration_ms \(20000\) must be at least three heartbeats/);
    assert.throws(() => loadConfig({}, { GATEHOUSE_HEARTBEAT_MS: '10', GATEHOUSE_LEASE_MS: '100' }), /heartbeat_ms must be at least 100/);
  });

  test('--store, GATEHOUSE_STORE and store: in gatehouse.yaml, later sources winning; only postgres:// URLs', () => {
    const dir = mkdtempSync(path.join(work, 'config-'));
    const file = path.join(dir, 'gatehouse.yaml');
    writeFileSync(file, 'store: postgres://gh@db.example:5432/from_file\n');
    assert.equal(loadConfig({}, {}).store, undefined, 'SQLite by default');
    assert.equal(loadConfig({ config: file }, {}).store, 'postgres://gh@db.example:5432/from_file');
    assert.equal(loadConfig({ config: file }, { GATEHOUSE_STORE: 'postgresql://gh@db/from_env' }).store, 'postgresql://gh@db/from_env');
    assert.equal(loadConfig({ config: file, store: 'postgres://gh@db/from_flag' }, { GATEHOUSE_STORE: 'postgres://gh@db/from_env' }).store,
      'postgres://gh@db/from_flag');
    assert.throws(() => loadConfig({ store: 'mysql://db/x' }, {}), /--store must be a postgres:\/\/ URL/);
    assert.throws(() => loadConfig({}, { GATEHOUSE_STORE: '/var/lib/gatehouse.db' }), /GATEHOUSE_STORE must be a postgres:\/\/ URL/);
    writeFileSync(file, 'store: sqlite:///x\n');
    assert.throws(() => loadConfig({ config: file }, {}), /store must be a postgres:\/\/ URL/);
  });
});

// ---- end to end ------------------------------------------------------------------------------

describe('gatehouse up --store postgres://…', () => {
  let target: PgCluster;
  let gw: TestGateway | undefined;
  let e2e: string;

  before(async () => {
    target = await startPgCluster();
    e2e = mkdtempSync(path.join(work, 'e2e-'));
  });

  after(async () => {
    await gw?.stop();
    await target?.stop();
  });

  async function psqlThrough(g: TestGateway, tok: string, script: string): Promise<string> {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
    const r = await run('psql', [g.dsn('app', 'pg-store-agent'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'],
      { env: { ...env, PGPASSWORD: tok, PGCONNECT_TIMEOUT: '10' }, input: script, timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  /** Waits until `count` sessions are listed and all have ended; returns their ids, oldest first. */
  async function endedSessions(g: TestGateway, count: number): Promise<string[]> {
    let rows: Array<{ id: string; startedAt: string; endedAt: string | null }> = [];
    for (let i = 0; i < 200; i++) {
      rows = JSON.parse(await g.cliOk(['sessions', 'list', '--json', '--identity', 'pg-store-agent'])) as typeof rows;
      if (rows.length === count && rows.every((s) => s.endedAt !== null)) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(rows.length, count, JSON.stringify(rows));
    assert.ok(rows.every((s) => s.endedAt !== null), 'all sessions ended');
    return rows.reverse().map((s) => s.id);
  }

  async function exportAndVerify(g: TestGateway, id: string, position: number): Promise<void> {
    const bundle = path.join(e2e, `bundle-${id}`);
    const out = await g.cliOk(['sessions', 'export', id, '--out', bundle]);
    assert.match(out, /sealed/);
    assert.doesNotMatch(out, /NOT sealed/);
    // Offline: only the bundle, no gateway, no store.
    const r = await run(process.execPath, [GATEHOUSE_BIN, 'verify', bundle], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, `the bundle should verify:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^OK {2}session ${id}: \\d+ events, \\d+ checkpoints, sealed at log position ${position}\\n`));
    assert.match(r.stdout, /identity pg-store-agent \(agent\) on app; ended: client terminated/);
  }

  test('records psql sessions in PostgreSQL; exports verify offline; a restart continues from the same store', async () => {
    const storeDb = 'gatehouse_e2e';
    await cluster.sql(`CREATE DATABASE ${storeDb};`);
    const storeUrl = pgUrl(storeDb);
    const dataDir = path.join(e2e, 'data');
    gw = await startTestGateway({ dataDir, args: ['--store', storeUrl] });
    const tok = await gw.setupPostgres({ identity: 'pg-store-agent', connection: 'app', cluster: target });
    const out = await psqlThrough(gw, tok, [
      'create table pg_store_probe (id int primary key, note text);',
      "insert into pg_store_probe values (1, 'recorded in postgres'), (2, 'quote '' and \\ backslash');",
      "select note from pg_store_probe where id = 2;",
      "select 'end of first session';",
    ].join('\n') + '\n');
    assert.match(out, /end of first session/);
    const [first] = await endedSessions(gw, 1);

    const show = await gw.cliOk(['sessions', 'show', first]);
    assert.match(show, /create table pg_store_probe \(id int primary key, note text\);/);
    assert.match(show, /insert into pg_store_probe values \(1, 'recorded in postgres'\)/);
    assert.match(show, /select note from pg_store_probe where id = 2;/);
    assert.match(show, /select 'end of first session';/);
    assert.match(show, /identity\s+pg-store-agent \(agent\)/);

    // The recording is in the PostgreSQL store, not in a SQLite file in the data directory.
    assert.equal(existsSync(path.join(dataDir, 'gatehouse.db')), false, 'no SQLite store was created');
    const recorded = JSON.parse(await gw.cliOk(['sessions', 'show', first, '--json'])) as { events: unknown[] };
    assert.equal(await cluster.sql(`SELECT count(*) FROM events WHERE session_id = '${first}';`, storeDb), String(recorded.events.length));
    assert.equal(await cluster.sql("SELECT count(*) FROM events WHERE data LIKE '%select note from pg_store_probe where id = 2;%';", storeDb), '1');
    assert.equal(await cluster.sql(`SELECT position FROM seals WHERE session_id = '${first}';`, storeDb), '1');
    assert.equal(await cluster.sql("SELECT kind FROM identities WHERE name = 'pg-store-agent';", storeDb), 'agent');
    assert.equal(await cluster.sql("SELECT count(*) FROM connections WHERE name = 'app' AND sealed_secret IS NOT NULL;", storeDb), '1');
    // …while the keys stay in the data directory.
    assert.ok(existsSync(path.join(dataDir, 'signing')), 'signing keys in the data directory');
    assert.ok(existsSync(path.join(dataDir, 'seal-log.head')), 'seal-log head in the data directory');

    await exportAndVerify(gw, first, 1);

    // Restart on the same store and data directory: identities, tokens, connections and the
    // seal log continue from PostgreSQL (the agent's token still works).
    await gw.stop();
    gw = await startTestGateway({ dataDir, args: ['--store', storeUrl] });
    assert.equal(await cluster.sql('SELECT count(*) FROM schema_migrations;', storeDb), String(POSTGRES_MIGRATIONS.length));
    await psqlThrough(gw, tok, "select count(*) from pg_store_probe;\nselect 'second session';\n");
    const [again, second] = await endedSessions(gw, 2);
    assert.equal(again, first);
    assert.match(await gw.cliOk(['sessions', 'show', second]), /select 'second session';/);
    await exportAndVerify(gw, second, 2);
    await gw.stop();
    gw = undefined;

    // The whole PostgreSQL store verifies too (the verifier's library, over the PostgreSQL store).
    const store = await PostgresStore.open(storeUrl);
    try {
      const r = await verifyStore(store, { sealLogHead: readSealLogHead(path.join(dataDir, 'seal-log.head')) });
      assert.deepEqual(r.problems, []);
      assert.deepEqual({ sessions: r.sessions, sealed: r.sealed, open: r.open, seals: r.seals }, { sessions: 2, sealed: 2, open: 0, seals: 2 });
    } finally {
      await store.close();
    }
    // And through the CLI, as an operator runs it; then a deleted session is caught.
    const ok = await run(process.execPath, [GATEHOUSE_BIN, 'verify', '--store', '--store-url', storeUrl, '--data-dir', dataDir], { timeoutMs: 30_000 });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /2 sessions \(2 sealed and intact, 0 open\), 2 seals in the log: all intact/);
    const tampered = await PostgresStore.open(storeUrl);
    try {
      await tampered.deleteSessions([second]);
    } finally {
      await tampered.close();
    }
    const broken = await run(process.execPath, [GATEHOUSE_BIN, 'verify', '--store', '--store-url', storeUrl, '--data-dir', dataDir], { timeoutMs: 30_000 });
    assert.equal(broken.code, 1, broken.stdout);
    assert.match(broken.stdout, new RegExp(`session ${second} \\(seal log position 2\\) is missing from the store: it was deleted`));
  });
});
