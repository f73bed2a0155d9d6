// Policy versions in both stores (docs/policy.md): each apply is numbered one past the newest,
// also when two gateways apply at once on one store; the newest is in force; versions keep their
// text; and a PolicyService on another store instance (another gateway) picks a new version up.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { PostgresStore } from '../../src/store/postgres/postgres-store.ts';
import type { Store } from '../../src/store/types.ts';
import { PolicyService } from '../../src/policy/policy-service.ts';
import { loadPolicyParser } from '../../src/policy/sql-facts.ts';

let cluster: PgCluster;
const work = mkdtempSync(path.join(tmpdir(), 'gatehouse-policy-store-'));
let databases = 0;

const STORES: Array<{ name: string; place(): Promise<string>; open(place: string): Promise<Store> }> = [
  { name: 'sqlite', place: async () => path.join(mkdtempSync(path.join(work, 's-')), 'gatehouse.db'), open: async (file) => new SqliteStore(file) },
  {
    name: 'postgres',
    async place() {
      const db = `policy_${++databases}`;
      await cluster.sql(`CREATE DATABASE ${db};`);
      return `postgres://postgres@${cluster.host}:${cluster.port}/${db}`;
    },
    open: (url) => PostgresStore.open(url),
  },
];

before(async () => { cluster = await startPgCluster(); await loadPolicyParser(); });
after(async () => {
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

const DENY_DROPS = 'rules:\n  - name: no-drops\n    sql: { commands: ["DROP *"] }\n    action: deny\n';
const subject = { identity: 'bot', kind: 'agent', groups: [] };
const place = { connection: 'db', type: 'postgres' };

for (const s of STORES) {
  describe(`${s.name} store: policy versions`, () => {
    test('numbered in order, also when two gateways apply at once; the newest is in force; texts are kept', async () => {
      const where = await s.place();
      const [a, b] = [await s.open(where), await s.open(where)];
      try {
        assert.equal(await a.getPolicyVersion(), undefined);
        const v = (n: number) => ({ hash: `h${n}`, document: `{"rules":[]}`, source: `# ${n}\nrules: []\n`, appliedBy: 'admin', appliedAt: 1000 + n });
        const applied = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? a : b).addPolicyVersion(v(i))));
        assert.deepEqual(applied.map((x) => x.version).sort((x, y) => x - y), [1, 2, 3, 4, 5, 6, 7, 8], 'each apply got its own number');
        const newest = await b.getPolicyVersion();
        assert.equal(newest?.version, 8);
        const third = await a.getPolicyVersion(3);
        assert.equal(third?.source, applied.find((x) => x.version === 3)!.source);
        assert.deepEqual((await a.listPolicyVersions()).map((x) => x.version), [8, 7, 6, 5, 4, 3, 2, 1]);
      } finally {
        await a.close();
        await b.close();
      }
    });

    test('a policy applied through one gateway is in force at another after a refresh; an unreadable version denies everything', async () => {
      const where = await s.place();
      const [a, b] = [await s.open(where), await s.open(where)];
      const log = pino({ level: 'silent' });
      const [pa, pb] = [new PolicyService(a, log), new PolicyService(b, log)];
      try {
        await pa.start();
        await pb.start();
        assert.equal(pb.decide(subject, place, { kind: 'sql', text: 'drop table t' }).decision, 'allow');
        await pa.apply(DENY_DROPS, 'admin');
        assert.equal(pa.decide(subject, place, { kind: 'sql', text: 'drop table t' }).decision, 'deny');
        await pb.refresh();
        const v = pb.decide(subject, place, { kind: 'sql', text: 'drop table t' });
        assert.deepEqual([v.decision, v.rule, v.policyVersion], ['deny', 'no-drops', 1]);
        // A version whose text does not match its hash (a tampered row): fail closed.
        await a.addPolicyVersion({ hash: 'f'.repeat(64), document: '{}', source: DENY_DROPS.replace('deny', 'allow'), appliedBy: 'mallory', appliedAt: 1 });
        await pb.refresh();
        const closed = pb.decide(subject, place, { kind: 'sql', text: 'select 1' });
        assert.equal(closed.decision, 'deny');
        assert.match(closed.reason, /the policy in force \(version 2\) cannot be read by this gateway: its rules hash to/);
        await pb.apply(DENY_DROPS, 'admin');
        assert.equal(pb.decide(subject, place, { kind: 'sql', text: 'select 1' }).decision, 'allow', 'a readable version restores decisions');
      } finally {
        pa.stop();
        pb.stop();
        await a.close();
        await b.close();
      }
    });
  });
}
