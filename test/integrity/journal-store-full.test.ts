// The journal writer with its disk full: the journal has its blocks already, so statements go on
// being recorded durably in it while SQLite cannot take their rows; once the journal is full too,
// statements are refused with 57P03 and not sent, the client stays connected; when space is back
// SQLite catches up, the same connection goes on, and the recording is whole and verifies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mountSmallDisk, type SmallDisk } from '../support/small-disk.ts';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { connectAndLogin } from '../support/pg-wire.ts';

let pg: PgCluster;
let gw: TestGateway;
let disk: SmallDisk;
let token: string;

before(async () => {
  disk = mountSmallDisk('gatehouse-journal-full-');
  pg = await startPgCluster();
  await pg.sql('CREATE TABLE t (v int); GRANT ALL ON t TO scram_user, trust_user;', 'app');
  gw = await startTestGateway({ dataDir: disk.dataDir, env: { GATEHOUSE_RECORD_WRITER: 'journal', GATEHOUSE_RECORD_JOURNAL_BYTES: String(64 * 1024) } });
  token = await gw.setupPostgres({ identity: 'writer', connection: 'app', cluster: pg });
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  disk?.unmount();
});

test('journal writer, disk full: recorded in the journal while it has room, then refused with 57P03; SQLite catches up when space is back', { timeout: 120_000 }, async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'writer', database: 'app', password: token });
  await wire.queryOk('INSERT INTO t VALUES (0)');
  disk.fill();
  const sent: number[] = [0];
  const refused: number[] = [];
  try {
    for (let v = 1; v <= 2000 && refused.length === 0; v++) {
      const r = await wire.query(`INSERT INTO t VALUES (${v})`);
      if (r.errors.length === 0) {
        sent.push(v);
        continue;
      }
      assert.equal(r.errors[0].code, '57P03', r.errors[0].message);
      assert.match(r.errors[0].message, /could not record this statement/);
      assert.equal(r.status, 'I');
      refused.push(v);
    }
    assert.ok(sent.length > 1, 'the journal took statements while SQLite could not');
    assert.equal(refused.length, 1, `a statement was refused once the journal was full (${sent.length} went through)`);
    // Nothing refused reached the database; everything sent did.
    assert.equal(await pg.sql('SELECT count(*) FROM t', 'app'), String(sent.length));
  } finally {
    disk.free();
  }
  // Space is back: the same connection goes on (the retained batch is retried within a second).
  let back = await wire.query('INSERT INTO t VALUES (-1)');
  for (let i = 0; i < 20 && back.errors.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 250));
    back = await wire.query('INSERT INTO t VALUES (-1)');
  }
  assert.deepEqual(back.tags, ['INSERT 0 1']);
  wire.terminate();
  await new Promise((r) => setTimeout(r, 500));

  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--identity', 'writer', '--json'])) as Array<{ id: string; endReason: string }>;
  const main = sessions.find((s) => s.endReason === 'client terminated');
  assert.ok(main, JSON.stringify(sessions));
  const detail = JSON.parse(await gw.cliOk(['sessions', 'show', main.id, '--json'])) as { events: Array<{ seq: number; type: string; data: Record<string, unknown> }> };
  const statements = detail.events.filter((e) => e.type === 'query');
  const texts = statements.map((e) => String(e.data.text));
  for (const v of [...sent, ...refused]) assert.ok(texts.includes(`INSERT INTO t VALUES (${v})`), `statement ${v} is in the recording`);
  const refusedEvent = statements.find((e) => e.data.text === `INSERT INTO t VALUES (${refused[0]})`)!;
  assert.equal(detail.events.find((e) => e.type === 'result' && e.data.ref === refusedEvent.seq)?.data.notForwarded, 'recording unavailable');
  const verify = await gw.cli(['verify', '--store', '--data-dir', gw.dataDir]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});
