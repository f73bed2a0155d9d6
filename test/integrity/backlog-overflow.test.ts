// The store's disk is full long enough for the gateway's backlog of unwritten events to overflow
// (issue 12 item 3). A best-effort connection keeps working; a durable one is refused (57P03) and
// nothing of it reaches the target unrecorded; once the disk has room again the recording holds a
// signed gap marker in place of the lost run, `sessions show` names it, and `verify --store`
// fails naming the session as incomplete — never a silent hole.
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
  disk = mountSmallDisk('gatehouse-overflow-');
  pg = await startPgCluster();
  await pg.sql('CREATE TABLE t (v int); GRANT ALL ON t TO scram_user, trust_user;', 'app');
  // A writer whose every commit needs free space (see store-unavailable.test.ts).
  gw = await startTestGateway({ dataDir: disk.dataDir, env: { GATEHOUSE_MAX_RETAINED_EVENTS: '60', GATEHOUSE_RECORD_WRITER: 'inline' } });
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

test('an overflowing backlog leaves a signed gap marker that show and verify report; durable statements are refused meanwhile', async () => {
  const { wire: bulk } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'writer', database: 'app-besteffort', password: token });
  const { wire: durable } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'writer', database: 'app', password: token });
  await bulk.queryOk('INSERT INTO t VALUES (0)');
  disk.fill();
  try {
    for (let i = 1; i <= 150; i++) await bulk.queryOk(`INSERT INTO t VALUES (${i})`); // best-effort: runs, unrecorded
    const refused = await durable.query('DELETE FROM t');
    assert.equal(refused.errors[0]?.code, '57P03');
    assert.equal(await pg.sql('SELECT count(*) FROM t', 'app'), '151', 'the durable DELETE did not run');
    const health = await (await fetch(`${gw.url}/api/v1/health`)).json() as { status: string; recording: { writing: boolean; droppedEvents: number } };
    assert.equal(health.status, 'degraded');
    assert.equal(health.recording.writing, false);
    assert.ok(health.recording.droppedEvents > 0, JSON.stringify(health));
  } finally {
    disk.free();
  }
  await new Promise((r) => setTimeout(r, 1500)); // the kept batch is retried within a second
  await bulk.queryOk('INSERT INTO t VALUES (999)');
  await durable.queryOk('SELECT 1');
  bulk.terminate();
  durable.terminate();
  await new Promise((r) => setTimeout(r, 500));

  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--connection', 'app-besteffort', '--json'])) as Array<{ id: string }>;
  assert.equal(sessions.length, 1);
  const id = sessions[0]!.id;
  const detail = JSON.parse(await gw.cliOk(['sessions', 'show', id, '--json'])) as { events: Array<{ seq: number; type: string; data: Record<string, unknown> }> };
  const gaps = detail.events.filter((e) => e.type === 'recording.gap');
  assert.equal(gaps.length, 1, JSON.stringify(detail.events.map((e) => e.type)));
  const texts = detail.events.filter((e) => e.type === 'query').map((e) => e.data.text);
  assert.equal(texts[0], 'INSERT INTO t VALUES (0)');
  assert.equal(texts.at(-1), 'INSERT INTO t VALUES (999)', 'recording goes on whole after the gap');
  const after = await (await fetch(`${gw.url}/api/v1/health`)).json() as { status: string; recording: { gapMarkers: number } };
  assert.equal(after.status, 'ok');
  assert.ok(after.recording.gapMarkers >= 1, JSON.stringify(after));
  const shown = await gw.cliOk(['sessions', 'show', id]);
  assert.match(shown, /LOST {5}events #\d+–#\d+ \(\d+\) were not recorded: the recording store could not write/);

  const verify = await gw.cli(['verify', '--store', '--data-dir', gw.dataDir]);
  assert.notEqual(verify.code, 0, 'a record with a gap does not verify as complete');
  const out = verify.stdout + verify.stderr;
  assert.match(out, new RegExp(`${id}: incomplete: events \\d+–\\d+ \\(\\d+\\) were lost by the gateway, which signed a gap marker`));
  assert.equal(out.match(/incomplete:/g)?.length, 1, `only the best-effort session is incomplete: ${out}`);
});
