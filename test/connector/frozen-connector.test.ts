// A connector that stops answering without closing its connection (SIGSTOP: what a network
// partition or a hung host looks like to the gateway — no FIN, no RST). Keepalive pings must find
// out, and new sessions of a connection served by two connectors must go to the healthy one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { connectAndLogin } from '../support/pg-wire.ts';
import { addViaConnection, enrollConnector, listConnectors, waitForConnectorStatus, type ConnectorProcess } from '../support/connector.ts';

let cluster: PgCluster;
let gw: TestGateway;
let token: string;
let frozen: ConnectorProcess;
let healthy: ConnectorProcess;

before(async () => {
  cluster = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'heidi', connection: 'direct', cluster });
  frozen = await enrollConnector(gw, 'frozen', [`${cluster.host}:${cluster.port}`]);
  healthy = await enrollConnector(gw, 'healthy', [`${cluster.host}:${cluster.port}`]);
  await addViaConnection(gw, { name: 'via_both', via: ['frozen', 'healthy'], host: cluster.host, port: cluster.port, identity: 'heidi' });
});

after(async () => {
  frozen?.process.kill('SIGCONT');
  await frozen?.kill('SIGKILL');
  await healthy?.kill('SIGKILL');
  await gw?.stop();
  await cluster?.stop();
});

async function session(i: number): Promise<string> {
  const t0 = Date.now();
  try {
    const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'heidi', database: 'via_both', password: token, timeoutMs: 15_000 });
    const r = await wire.queryOk(`select ${i}`, 5000);
    wire.terminate();
    return `ok ${r.rows[0][0]}`;
  } catch (err) {
    return `session ${i} failed after ${Date.now() - t0} ms: ${(err as Error).message}`;
  }
}

let stoppedAt = 0;

test('a frozen connector (SIGSTOP): every new session of a connection it serves with another one still works', async () => {
  stoppedAt = Date.now();
  frozen.process.kill('SIGSTOP');
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => session(i)));
  assert.deepEqual(results.filter((r) => !r.startsWith('ok')), [], `every new session works through the healthy connector: ${JSON.stringify(results)}`);
});

test('keepalive: a connector that answers no ping is no longer listed as connected (within 35 s)', async () => {
  assert.ok(stoppedAt > 0, 'the connector was stopped');
  let status = '';
  while (Date.now() - stoppedAt < 35_000) {
    status = (await listConnectors(gw)).find((c) => c.name === 'frozen')?.status ?? '';
    if (status !== 'connected') break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.equal(status, 'disconnected', `still "${status}" ${Date.now() - stoppedAt} ms after it froze`);
  assert.equal((await listConnectors(gw)).find((c) => c.name === 'healthy')?.status, 'connected');
});

test('thawed (SIGCONT), the connector is connected again and sessions work', async () => {
  frozen.process.kill('SIGCONT');
  await waitForConnectorStatus(gw, 'frozen', 'connected', 20_000);
  const results = await Promise.all(Array.from({ length: 4 }, (_, i) => session(i)));
  assert.deepEqual(results, ['ok 0', 'ok 1', 'ok 2', 'ok 3']);
});
