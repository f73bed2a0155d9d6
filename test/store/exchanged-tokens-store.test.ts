// The store's record of exchanged OIDC ID tokens (migration 13), on both stores: a key is
// recorded once until it expires (a replay loses), of concurrent inserts of one key exactly one
// wins — also between two store instances on one SQLite file or one PostgreSQL database, as
// several gateways are — an expired entry is replaced, expired entries are removed, and the
// record survives reopening the store.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { PostgresStore } from '../../src/store/postgres/postgres-store.ts';
import type { Store } from '../../src/store/types.ts';

let cluster: PgCluster;
const work = mkdtempSync(path.join(tmpdir(), 'gatehouse-exchanged-store-'));
let databases = 0;

/** Each `place()` is a fresh store location; `open(place)` opens one more store on it (another gateway). */
const STORES: Array<{ name: string; place(): Promise<string>; open(place: string): Promise<Store> }> = [
  {
    name: 'sqlite',
    place: async () => path.join(mkdtempSync(path.join(work, 's-')), 'gatehouse.db'),
    open: async (file) => new SqliteStore(file),
  },
  {
    name: 'postgres',
    async place() {
      const db = `exchanged_${++databases}`;
      await cluster.sql(`CREATE DATABASE ${db};`);
      return `postgres://postgres@${cluster.host}:${cluster.port}/${db}`;
    },
    open: (url) => PostgresStore.open(url),
  },
];

before(async () => { cluster = await startPgCluster(); });
after(async () => {
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

const NOW = 1_790_000_000_000;
const KEY = `jti:${'a'.repeat(64)}`;

for (const s of STORES) {
  describe(`${s.name} store: exchanged OIDC tokens`, () => {
    test('recorded once until it expires; a replay loses; an expired entry is replaced; expired entries are removed; reopening keeps the record', async () => {
      const place = await s.place();
      let store = await s.open(place);
      try {
        assert.equal(await store.recordExchangedToken(KEY, NOW + 600_000, NOW), true, 'first exchange');
        assert.equal(await store.recordExchangedToken(KEY, NOW + 600_000, NOW + 1), false, 'a replay');
        assert.equal(await store.recordExchangedToken(KEY, NOW + 900_000, NOW + 600_000), false, 'still on record at its expiry');
        assert.equal(await store.recordExchangedToken(`token:${'b'.repeat(64)}`, NOW + 1000, NOW), true, 'another key');

        await store.close();
        store = await s.open(place);
        assert.equal(await store.recordExchangedToken(KEY, NOW + 600_000, NOW + 2), false, 'a replay after a restart');

        // Expired but not yet removed: the issuer may reuse a jti once the first token is dead.
        assert.equal(await store.recordExchangedToken(`token:${'b'.repeat(64)}`, NOW + 5000, NOW + 1001), true);
        assert.equal(await store.recordExchangedToken(`token:${'b'.repeat(64)}`, NOW + 5000, NOW + 1002), false, 'and that one is recorded again');

        assert.equal(await store.deleteExchangedTokens(NOW + 4000), 0);
        assert.equal(await store.deleteExchangedTokens(NOW + 10_000), 1, 'the entry expiring at +5 s goes');
        assert.equal(await store.recordExchangedToken(KEY, NOW + 600_000, NOW + 10_000), false, 'the live entry stays');
        assert.equal(await store.deleteExchangedTokens(NOW + 600_001), 1);
        assert.equal(await store.recordExchangedToken(KEY, NOW + 1_200_000, NOW + 600_001), true, 'gone after it expired');
      } finally {
        await store.close();
      }
    });

    test('concurrent exchanges of one token, through two stores on one database: exactly one wins', async () => {
      const place = await s.place();
      const [a, b] = [await s.open(place), await s.open(place)];
      try {
        for (let round = 0; round < 5; round++) {
          const key = `jti:${String(round).repeat(64)}`;
          const results = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).recordExchangedToken(key, NOW + 600_000, NOW)));
          assert.equal(results.filter(Boolean).length, 1, `round ${round}: ${JSON.stringify(results)}`);
        }
      } finally {
        await a.close();
        await b.close();
      }
    });
  });
}
