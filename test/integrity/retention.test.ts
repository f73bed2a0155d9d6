// Retention removes expired recordings but explains each removal with a signed tombstone in the
// seal log; a legal hold prevents removal.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';

let pg: PgCluster;
let gw: TestGateway;
let dataDir: string;
let token: string;

before(async () => {
  pg = await startPgCluster();
  dataDir = mkdtempSync(path.join(tmpdir(), 'gatehouse-retention-'));
  gw = await startTestGateway({ dataDir });
  token = await gw.setupPostgres({ identity: 'ret', connection: 'short', cluster: pg });
  await gw.cliOk(['connection', 'rm', 'short']);
  await gw.cliOk(['connection', 'add', 'short', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port), '--database', 'app',
    '--user', 'trust_user', '--retention', '1s']);
  await gw.cliOk(['connection', 'add', 'kept', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port), '--database', 'app', '--user', 'trust_user']);
  await gw.cliOk(['grant', 'ret', 'short']);
  await gw.cliOk(['grant', 'ret', 'kept']);
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

const psql = (conn: string, sql: string) => run('psql', [gw.dsn(conn, 'ret'), '-XAtc', sql], { env: { ...process.env, PGPASSWORD: token } });
const list = async (conn: string) => JSON.parse(await gw.cliOk(['sessions', 'list', '--connection', conn, '--json'])) as Array<{ id: string; legalHold: boolean }>;

test('expired sessions are removed and tombstoned; held and unexpired ones stay; the store still verifies', async () => {
  for (const sql of ['select 1', 'select 2', 'select 3']) assert.equal((await psql('short', sql)).code, 0);
  assert.equal((await psql('kept', 'select 4')).code, 0);
  const short = await list('short');
  assert.equal(short.length, 3);
  const held = short[1].id;
  assert.match(await gw.cliOk(['sessions', 'hold', held]), /under legal hold/);
  assert.equal((await list('short')).find((s) => s.id === held)?.legalHold, true);

  await new Promise((r) => setTimeout(r, 1500));
  assert.match(await gw.cliOk(['retention', 'run']), /^2 expired sessions removed \(short: 2\)$/m);
  assert.deepEqual((await list('short')).map((s) => s.id), [held], 'only the held session of the short-lived connection is left');
  assert.equal((await list('kept')).length, 1, 'a connection without retention keeps its recordings');

  const verify = await gw.cli(['verify', '--store', '--data-dir', dataDir]);
  assert.equal(verify.code, 0, verify.stdout);
  assert.match(verify.stdout, /2 removed by retention \(tombstoned\): all intact/);

  // The held session still exports and verifies; releasing the hold lets retention remove it.
  const bundle = path.join(dataDir, 'held-bundle');
  await gw.cliOk(['sessions', 'export', held, '--out', bundle]);
  assert.equal((await gw.cli(['verify', bundle])).code, 0);
  await gw.cliOk(['sessions', 'hold', held, '--release']);
  assert.match(await gw.cliOk(['retention', 'run']), /^1 expired session removed/m);
  assert.equal((await list('short')).length, 0);
});

test('removing a tombstone (to hide that sessions existed) breaks the seal log', async () => {
  await gw.stop();
  const copy = mkdtempSync(path.join(tmpdir(), 'gatehouse-retention-copy-'));
  try {
    cpSync(dataDir, copy, { recursive: true });
    const db = new DatabaseSync(path.join(copy, 'gatehouse.db'));
    const t = db.prepare("SELECT position FROM seals WHERE session_id LIKE 'tombstone:%' ORDER BY position LIMIT 1").get() as { position: number };
    db.prepare('DELETE FROM seals WHERE position = ?').run(t.position);
    db.close();
    const verify = await gw.cli(['verify', '--store', '--data-dir', copy]);
    assert.equal(verify.code, 1);
    assert.match(verify.stdout, new RegExp(`seal log position ${t.position} is missing`));
    assert.match(verify.stdout, /is missing from the store: it was deleted/);
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
});
