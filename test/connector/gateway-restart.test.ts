// When the gateway restarts (kill -9, or a clean SIGTERM), a running connector process reconnects by
// itself to the new gateway (same data directory, same tunnel address) and sessions work again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort, startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { connectAndLogin, type PgWire } from '../support/pg-wire.ts';
import {
  addViaConnection, enrollConnector, waitForConnectorStatus, waitForText, type ConnectorProcess,
} from '../support/connector.ts';

let cluster: PgCluster;
let dataDir: string;
let tunnelPort: number;
let gw: TestGateway | undefined;
let token: string;
let connector: ConnectorProcess;

const startGateway = (): Promise<TestGateway> => startTestGateway({ dataDir, args: ['--connector-listen', `127.0.0.1:${tunnelPort}`] });

before(async () => {
  cluster = await startPgCluster();
  dataDir = mkdtempSync(path.join(tmpdir(), 'gatehouse-restart-'));
  tunnelPort = await freePort();
  gw = await startGateway();
  assert.equal(gw.connectorPort, tunnelPort);
  token = await gw.setupPostgres({ identity: 'grace', connection: 'direct', cluster });
  connector = await enrollConnector(gw, 'steady', [`${cluster.host}:${cluster.port}`]);
  await addViaConnection(gw, { name: 'via_steady', via: ['steady'], host: cluster.host, port: cluster.port, identity: 'grace' });
});

after(async () => {
  await connector?.kill('SIGKILL');
  await gw?.stop();
  await cluster?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function login(g: TestGateway): Promise<PgWire> {
  return (await connectAndLogin({ host: g.pgHost, port: g.pgPort, user: 'grace', database: 'via_steady', password: token, timeoutMs: 10_000 })).wire;
}

async function roundTrip(g: TestGateway, n: number): Promise<void> {
  const wire = await login(g);
  assert.deepEqual((await wire.queryOk(`select ${n}`)).rows, [[String(n)]]);
  wire.terminate();
}

test('gateway kill -9 and restart: the connector process reconnects by itself and sessions work', async () => {
  await roundTrip(gw!, 1);
  const open = await login(gw!);
  const pid = connector.pid;
  const downsBefore = (connector.logs().match(/"msg":"tunnel down"/g) ?? []).length;

  await gw!.kill();
  await open.whenClosed; // the client's session died with the gateway
  await waitForText(() => String((connector.logs().match(/"msg":"tunnel down"/g) ?? []).length > downsBefore), 'true');
  await new Promise((r) => setTimeout(r, 1500)); // a few refused reconnects while the gateway is away
  assert.equal(connector.running, true, 'the connector survives the gateway going away');

  gw = await startGateway();
  const t0 = Date.now();
  const entry = await waitForConnectorStatus(gw, 'steady', 'connected', 20_000);
  assert.equal(entry.tunnels, 1);
  assert.equal(connector.pid, pid);
  assert.equal(connector.running, true, 'the same process, not a restart');
  assert.ok(Date.now() - t0 < 15_000);
  await roundTrip(gw, 2);
  await waitForText(gw.logs, /"connector":"steady".*"msg":"connector connected"/);
});

test('gateway SIGTERM and restart: the connector reconnects again, sessions work', async () => {
  await roundTrip(gw!, 3);
  await gw!.stop(); // the data directory is ours: stop() keeps it
  await waitForConnectorStatus(gw = await startGateway(), 'steady', 'connected', 20_000);
  await roundTrip(gw, 4);
  assert.equal(connector.running, true);
});
