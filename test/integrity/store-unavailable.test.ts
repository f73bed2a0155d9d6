// Fail closed, stay connected: when the recording store cannot write (here: its disk is full),
// statements get a protocol-native error and are not sent; the client stays connected; once
// the store works again, so does the session, and the recording is whole and verifies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mountSmallDisk, type SmallDisk } from '../support/small-disk.ts';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { bindMessage, connectAndLogin, executeMessage, parseMessage, summarize, syncMessage, type PgWire } from '../support/pg-wire.ts';

let pg: PgCluster;
let gw: TestGateway;
let disk: SmallDisk;
let token: string;

before(async () => {
  disk = mountSmallDisk('gatehouse-full-');
  pg = await startPgCluster();
  await pg.sql('CREATE TABLE t (v int); GRANT ALL ON t TO scram_user, trust_user;', 'app');
  // A writer whose every commit needs free space (the journal writer rides out a full disk until
  // its journal is full: test/integrity/journal-store-full.test.ts).
  gw = await startTestGateway({ dataDir: disk.dataDir, env: { GATEHOUSE_RECORD_WRITER: 'inline' } });
  token = await gw.setupPostgres({ identity: 'writer', connection: 'app', cluster: pg });
  await gw.cliOk(['connection', 'add', 'app-besteffort', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port),
    '--database', 'app', '--user', 'trust_user', '--recording', 'best-effort']);
  await gw.cliOk(['grant', 'writer', 'app-besteffort']);
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  disk?.unmount();
});

const login = (): Promise<{ wire: PgWire }> =>
  connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'writer', database: 'app', password: token });

test('with the store full: statements are refused with 57P03 and not sent, the client stays connected, and recovers', async () => {
  const { wire } = await login();
  await wire.queryOk('INSERT INTO t VALUES (1)');

  disk.fill();
  try {
    // Simple protocol: an error and ReadyForQuery, exactly as PostgreSQL answers a failed query.
    const refused = await wire.query('INSERT INTO t VALUES (2)');
    assert.equal(refused.errors.length, 1, 'one ErrorResponse');
    assert.equal(refused.errors[0].code, '57P03');
    assert.match(refused.errors[0].message, /could not record this statement/);
    assert.equal(refused.status, 'I');

    // Extended protocol: the error, then ReadyForQuery at the Sync.
    wire.send([parseMessage('', 'INSERT INTO t VALUES ($1)'), bindMessage('', '', ['3']), executeMessage(), syncMessage()]);
    const ext = summarize(await wire.readUntilReady());
    assert.equal(ext.errors.length, 1);
    assert.equal(ext.errors[0].code, '57P03');
    assert.equal(ext.status, 'I');

    // Nothing unrecorded reached the database.
    assert.equal(await pg.sql('SELECT string_agg(v::text, \',\' ORDER BY v) FROM t', 'app'), '1');

    // A new session cannot be recorded either: refused at login, with the same SQLSTATE.
    await assert.rejects(login(), (err: Error & { fields?: { code?: string } }) => {
      assert.equal(err.fields?.code, '57P03', err.message);
      return true;
    });
  } finally {
    disk.free();
  }

  // The store works again: the same connection goes on.
  const back = await wire.queryOk('INSERT INTO t VALUES (4)');
  assert.deepEqual(back.tags, ['INSERT 0 1']);
  assert.equal(await pg.sql('SELECT string_agg(v::text, \',\' ORDER BY v) FROM t', 'app'), '1,4');
  wire.terminate();
  await new Promise((r) => setTimeout(r, 300));

  // The recording holds every attempt, in order, with the refused ones marked as not sent.
  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--identity', 'writer', '--json'])) as Array<{ id: string; endReason: string }>;
  const main = sessions.find((s) => s.endReason === 'client terminated');
  assert.ok(main, JSON.stringify(sessions));
  const detail = JSON.parse(await gw.cliOk(['sessions', 'show', main.id, '--json'])) as { events: Array<{ seq: number; type: string; data: Record<string, unknown> }> };
  const statements = detail.events.filter((e) => e.type === 'query' || e.type === 'execute');
  assert.deepEqual(statements.map((e) => e.data.text), ['INSERT INTO t VALUES (1)', 'INSERT INTO t VALUES (2)', 'INSERT INTO t VALUES ($1)', 'INSERT INTO t VALUES (4)']);
  const outcome = (seq: number) => detail.events.find((e) => e.type === 'result' && e.data.ref === seq)?.data;
  assert.equal(outcome(statements[0].seq)?.tag, 'INSERT 0 1');
  assert.equal(outcome(statements[1].seq)?.notForwarded, 'recording unavailable');
  assert.equal(outcome(statements[2].seq)?.notForwarded, 'recording unavailable');
  assert.equal(outcome(statements[3].seq)?.tag, 'INSERT 0 1');
  // The refused login is on record too.
  assert.ok(sessions.some((s) => s.endReason.startsWith('refused: the recording store was unavailable')), JSON.stringify(sessions.map((s) => s.endReason)));

  const verify = await gw.cli(['verify', '--store', '--data-dir', gw.dataDir]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});

test('a best-effort connection keeps working while the store is full, says so on its sessions, and records everything once it can', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'writer', database: 'app-besteffort', password: token });
  await wire.queryOk('INSERT INTO t VALUES (10)');
  disk.fill();
  try {
    const r = await wire.queryOk('INSERT INTO t VALUES (11)');
    assert.deepEqual(r.tags, ['INSERT 0 1'], 'best-effort: the statement runs although it is not yet recorded');
  } finally {
    disk.free();
  }
  await wire.queryOk('INSERT INTO t VALUES (12)');
  wire.terminate();
  await new Promise((r) => setTimeout(r, 1500)); // the retained batch is retried within a second

  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--connection', 'app-besteffort', '--json'])) as Array<{ id: string; recording: string }>;
  assert.equal(sessions.length, 1);
  assert.equal(sessions[0].recording, 'best-effort');
  const detail = JSON.parse(await gw.cliOk(['sessions', 'show', sessions[0].id, '--json'])) as { events: Array<{ type: string; data: Record<string, unknown> }> };
  assert.deepEqual(detail.events.filter((e) => e.type === 'query').map((e) => e.data.text), ['INSERT INTO t VALUES (10)', 'INSERT INTO t VALUES (11)', 'INSERT INTO t VALUES (12)']);
  assert.equal(detail.events.find((e) => e.type === 'session.start')?.data.recording, 'best-effort');
  const show = await gw.cliOk(['sessions', 'show', sessions[0].id]);
  assert.match(show, /recording\s+best-effort/);
  const verify = await gw.cli(['verify', '--store', '--data-dir', gw.dataDir]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});
