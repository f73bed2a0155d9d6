// `gatehouse connector rm NAME` revokes a connector: its tunnel is cut at once (sessions through it
// end the PostgreSQL way), it cannot come back with its certificate, `connector list` says revoked,
// and connections via it fail with a clear error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { connectAndLogin, decodeError, PgServerError, type PgWire } from '../support/pg-wire.ts';
import {
  addViaConnection, enrollConnector, listConnectors, listSessions, pgEnv, sessionIds, waitForConnectorStatus, waitForNewSessions, waitForText,
  type ConnectorProcess,
} from '../support/connector.ts';

let cluster: PgCluster;
let gw: TestGateway;
let token: string;
let connector: ConnectorProcess;
const extra: ConnectorProcess[] = [];

before(async () => {
  cluster = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'carol', connection: 'direct', cluster });
  connector = await enrollConnector(gw, 'rv', [`${cluster.host}:${cluster.port}`]);
  await addViaConnection(gw, { name: 'via_rv', via: ['rv'], host: cluster.host, port: cluster.port, identity: 'carol' });
});

after(async () => {
  await connector?.kill('SIGKILL');
  for (const c of extra) await c.kill('SIGKILL');
  await gw?.stop();
  await cluster?.stop();
});

function login(database: string): Promise<{ wire: PgWire }> {
  return connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'carol', database, password: token, timeoutMs: 10_000 });
}

test('connector rm cuts the tunnel at once: open sessions through it get FATAL 08006 and a recorded reason', async () => {
  const beforeIds = await sessionIds(gw, { connection: 'via_rv' });
  const sessions: PgWire[] = [];
  for (let i = 0; i < 3; i++) {
    const { wire } = await login('via_rv');
    assert.deepEqual((await wire.queryOk(`select ${i}`)).rows, [[String(i)]]);
    sessions.push(wire);
  }
  const direct = (await login('direct')).wire;

  const t0 = Date.now();
  assert.match(await gw.cliOk(['connector', 'rm', 'rv']), /connector rv revoked/);
  for (const wire of sessions) {
    const closed = await wire.readUntilClosed(5000);
    const fatal = closed.messages.filter((m) => m.type === 'E').map((m) => decodeError(m.body))[0];
    assert.ok(fatal, `an ErrorResponse before the close: ${closed.messages.map((m) => m.type).join('')}`);
    assert.equal(fatal.severity, 'FATAL');
    assert.equal(fatal.code, '08006');
    assert.match(fatal.message, /connector rv/);
  }
  assert.ok(Date.now() - t0 < 3000, `sessions ended at once (${Date.now() - t0} ms)`);
  const ended = await waitForNewSessions(gw, beforeIds, 3, { connection: 'via_rv' });
  for (const s of ended) assert.match(s.endReason ?? '', /connector rv/, `recorded end reason: ${s.endReason}`);

  // Sessions on other connections are untouched.
  assert.deepEqual((await direct.queryOk('select 7')).rows, [['7']]);
  direct.terminate();
  await waitForText(gw.logs, /"connector":"rv".*"msg":"connector revoked; its tunnels are cut"/);
});

test('connector list shows the revoked connector as revoked, with no tunnel', async () => {
  const entry = await waitForConnectorStatus(gw, 'rv', 'revoked', 5000);
  assert.equal(entry.tunnels, 0);
  assert.equal(entry.openStreams, 0);
  const table = await gw.cliOk(['connector', 'list']);
  assert.match(table, /^rv\s+revoked\b/m);
});

test('the revoked connector cannot reconnect: the gateway refuses its certificate, it never reports connected', async () => {
  // The running process keeps retrying with its (revoked) certificate; the gateway refuses each attempt.
  await waitForText(gw.logs, /"connector":"rv".*connector refused: unknown, revoked or superseded certificate/, 10_000);
  assert.equal(connector.running, true, 'the process is still there (retrying)');
  // A fresh start from the same data directory must not claim a working tunnel either.
  await connector.kill('SIGKILL');
  const restarted = await connector.restart({ waitConnected: false });
  extra.push(restarted);
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && restarted.running) await new Promise((r) => setTimeout(r, 100));
  assert.doesNotMatch(restarted.stdout(), /is connected/, `a revoked connector must not report "is connected"; stdout: ${restarted.stdout()} log: ${restarted.logs().slice(-1500)}`);
  const entry = (await listConnectors(gw)).find((c) => c.name === 'rv');
  assert.equal(entry?.status, 'revoked');
  assert.equal(entry?.tunnels, 0);
});

test('a session via the revoked connector fails with 08006 and a clear error; the refusal is recorded', async () => {
  const beforeIds = await sessionIds(gw, { connection: 'via_rv' });
  let refusal: PgServerError | undefined;
  await assert.rejects(login('via_rv'), (err: unknown) => {
    assert.ok(err instanceof PgServerError, String(err));
    assert.equal(err.fields.severity, 'FATAL');
    assert.equal(err.fields.code, '08006');
    refusal = err;
    return true;
  });
  const [refused] = await waitForNewSessions(gw, beforeIds, 1, { connection: 'via_rv' });
  assert.match(refused.endReason ?? '', /^refused: .*connector/, `recorded: ${refused.endReason}`);
  const r = await run('psql', [gw.dsn('via_rv', 'carol'), '-X', '-w', '-c', 'select 1'], { env: pgEnv({ PGPASSWORD: token }), timeoutMs: 30_000 });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /could not connect to the target of connection "via_rv"/);
  assert.equal((await listSessions(gw, { connection: 'via_rv' })).filter((s) => s.endReason?.startsWith('refused')).length, 2);
  // Last, so the checks above run either way: the client itself is told that a connector is missing.
  assert.match(`${refusal!.fields.message} ${refusal!.fields.detail ?? ''}`, /connector/, `the client learns the connector is missing: ${refusal!.message} / detail: ${refusal!.fields.detail}`);
});

test('a new connection cannot name the revoked connector', async () => {
  const r = await gw.cli(['connection', 'add', 'via_rv2', '--type', 'postgres', '--host', cluster.host, '--port', String(cluster.port),
    '--database', 'app', '--user', 'trust_user', '--via', 'rv']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /connector "rv" does not exist/);
});

test('adding the name again does not revive the revoked credential; a fresh enrollment works', async () => {
  const beforeRefusals = (gw.logs().match(/"connector":"rv".*connector refused: unknown, revoked or superseded certificate/g) ?? []).length;
  for (const c of extra) await c.kill('SIGKILL');
  const fresh = await enrollConnector(gw, 'rv', [`${cluster.host}:${cluster.port}`]);
  extra.push(fresh);
  assert.notEqual(fresh.dataDir, connector.dataDir);
  // The old credential, started again next to the new connector, is still refused.
  const old = await connector.restart({ waitConnected: false });
  extra.push(old);
  await waitForText(() => String((gw.logs().match(/"connector":"rv".*connector refused: unknown, revoked or superseded certificate/g) ?? []).length > beforeRefusals), 'true', 10_000);
  const entry = (await listConnectors(gw)).find((c) => c.name === 'rv');
  assert.equal(entry?.status, 'connected');
  assert.equal(entry?.tunnels, 1, 'only the newly enrolled connector has a tunnel');
  const { wire } = await login('via_rv');
  assert.deepEqual((await wire.queryOk('select 8')).rows, [['8']]);
  wire.terminate();
});
