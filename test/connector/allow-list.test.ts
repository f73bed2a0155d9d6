// The connector opens TCP connections only to the targets its --allow list names. A connection via
// the connector to anything else is refused by the connector itself: the client gets 08006, both
// logs report the refusal, and the target never sees a connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { connectAndLogin, PgServerError } from '../support/pg-wire.ts';
import {
  addViaConnection, enrollConnector, listConnectors, sessionIds, waitForNewSessions, waitForText, type ConnectorProcess,
} from '../support/connector.ts';

let cluster: PgCluster;
let gw: TestGateway;
let token: string;
let connector: ConnectorProcess;
/** A TCP listener the connector is not allowed to reach; counts every connection it gets. */
let decoy: net.Server;
let decoyPort: number;
let decoyConnections = 0;

before(async () => {
  cluster = await startPgCluster();
  decoy = net.createServer((s) => { decoyConnections++; s.destroy(); });
  await new Promise<void>((resolve) => decoy.listen(0, '127.0.0.1', resolve));
  decoyPort = (decoy.address() as net.AddressInfo).port;
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'dave', connection: 'direct', cluster });
  connector = await enrollConnector(gw, 'fenced', [`${cluster.host}:${cluster.port}`]);
  await addViaConnection(gw, { name: 'allowed', via: ['fenced'], host: cluster.host, port: cluster.port, identity: 'dave' });
});

after(async () => {
  await connector?.kill('SIGKILL');
  await gw?.stop();
  await cluster?.stop();
  await new Promise<void>((resolve) => decoy.close(() => resolve()));
});

async function expectRefusedTarget(connection: string, host: string, port: number): Promise<void> {
  await addViaConnection(gw, { name: connection, via: ['fenced'], host, port, identity: 'dave' });
  const beforeIds = await sessionIds(gw, { connection });
  await assert.rejects(connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'dave', database: connection, password: token, timeoutMs: 10_000 }),
    (err: unknown) => {
      assert.ok(err instanceof PgServerError, String(err));
      assert.equal(err.fields.severity, 'FATAL');
      assert.equal(err.fields.code, '08006');
      return true;
    });
  const [refused] = await waitForNewSessions(gw, beforeIds, 1, { connection });
  assert.match(refused.endReason ?? '', /refused/);
  assert.match(refused.endReason ?? '', /allow-list/, `the recorded reason names the allow-list: ${refused.endReason}`);
  const target = `${host}:${port}`;
  const esc = target.replace(/[.]/g, '\\.');
  await waitForText(connector.logs, new RegExp(`"target":"${esc}".*refused a target outside the allow-list`));
  await waitForText(gw.logs, new RegExp(`"connector":"fenced","target":"${esc}".*connector refused a target outside its allow-list`));
}

test('the allowed target works through the connector', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'dave', database: 'allowed', password: token });
  assert.deepEqual((await wire.queryOk('select 1')).rows, [['1']]);
  wire.terminate();
  assert.deepEqual((await listConnectors(gw)).find((c) => c.name === 'fenced')?.allow, [`${cluster.host}:${cluster.port}`]);
});

test('a target outside the allow-list (another port): 08006 for the client, refusal in both logs, nothing connected', async () => {
  await expectRefusedTarget('decoy', '127.0.0.1', decoyPort);
  assert.equal(decoyConnections, 0, 'the connector never connected to the decoy');
});

test('the allow-list matches host and port exactly: the same port under another name is refused too', async () => {
  await expectRefusedTarget('decoy_by_name', 'localhost', cluster.port);
  await expectRefusedTarget('decoy_other_host', '127.0.0.2', decoyPort);
  assert.equal(decoyConnections, 0);
  // The connector keeps serving the allowed target.
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'dave', database: 'allowed', password: token });
  assert.deepEqual((await wire.queryOk('select 2')).rows, [['2']]);
  wire.terminate();
  assert.equal(connector.running, true);
});
