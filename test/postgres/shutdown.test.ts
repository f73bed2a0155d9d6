// A gateway stopped with SIGTERM ends open sessions the PostgreSQL way (57P01) and seals them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { spawn } from 'node:child_process';
import { connectAndLogin, decodeError } from '../support/pg-wire.ts';

let pg: PgCluster;
let dataDir: string;
let gw: TestGateway | undefined;

before(async () => {
  pg = await startPgCluster();
  dataDir = mkdtempSync(path.join(tmpdir(), 'gatehouse-shutdown-'));
});
after(async () => {
  await gw?.stop();
  await pg?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test('SIGTERM: open sessions get FATAL 57P01, are recorded as ended by the shutdown, sealed, and verify', async () => {
  gw = await startTestGateway({ dataDir });
  const token = await gw.setupPostgres({ identity: 'stopper', connection: 'app', cluster: pg });
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'stopper', database: 'app', password: token });
  await wire.queryOk('select 1');
  const stopping = gw.stop();
  const closed = await wire.readUntilClosed(15_000);
  await stopping;
  const fatal = closed.messages.find((m) => m.type === 'E');
  assert.ok(fatal, 'an ErrorResponse before the close');
  const fields = decodeError(fatal.body);
  assert.equal(fields.code, '57P01');
  assert.equal(fields.severity, 'FATAL');

  gw = await startTestGateway({ dataDir });
  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--identity', 'stopper', '--json'])) as Array<{ endReason: string }>;
  assert.deepEqual(sessions.map((s) => s.endReason), ['gateway shutting down']);
  const verify = await gw.cli(['verify', '--store', '--data-dir', dataDir]);
  assert.equal(verify.code, 0, verify.stdout);
  assert.match(verify.stdout, /1 sessions \(1 sealed and intact, 0 open\)/);
});

test('SIGTERM while a statement runs: psql prints the FATAL 57P01 the gateway sends, the statement is cancelled on the target', async () => {
  await gw?.stop();
  gw = await startTestGateway({ dataDir });
  const token = await gw.setupPostgres({ identity: 'stopper2', connection: 'app2', cluster: pg });
  const child = spawn('psql', [gw.dsn('app2', 'stopper2', 'application_name=sigterm-mid'), '-X', '-c', 'select pg_sleep(30)'], {
    env: { ...process.env, PGPASSWORD: token }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 10_000;
  while ((await pg.sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'")) !== '1') {
    if (Date.now() > deadline) throw new Error('pg_sleep did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  await gw.stop();
  gw = undefined;
  const code = await exited;
  assert.notEqual(code, 0);
  assert.match(stderr, /FATAL: {2}terminating connection: gateway shutting down/, stderr);
  const gone = Date.now() + 10_000;
  while ((await pg.sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'")) !== '0') {
    if (Date.now() > gone) throw new Error('the statement still runs on the target after the gateway stopped');
    await new Promise((r) => setTimeout(r, 100));
  }
});
