// A gateway stopped with SIGTERM ends open sessions the PostgreSQL way (57P01) and seals them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
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
