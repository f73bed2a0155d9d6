// Per-stream flow control through one connector tunnel: a client that stops reading a large result
// holds back only its own stream. Another client's queries through the same connector keep
// running at full speed meanwhile, and neither the gateway nor the connector buffers the result.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { connectAndLogin, queryMessage, decodeDataRow, type PgWire } from '../support/pg-wire.ts';
import { addViaConnection, enrollConnector, listConnectors, type ConnectorProcess } from '../support/connector.ts';

let cluster: PgCluster;
let gw: TestGateway;
let token: string;
let connector: ConnectorProcess;

before(async () => {
  cluster = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'erin', connection: 'direct', cluster });
  connector = await enrollConnector(gw, 'fair', [`${cluster.host}:${cluster.port}`]);
  await addViaConnection(gw, { name: 'via_fair', via: ['fair'], host: cluster.host, port: cluster.port, identity: 'erin' });
});

after(async () => {
  await connector?.kill('SIGKILL');
  await gw?.stop();
  await cluster?.stop();
});

function login(): Promise<{ wire: PgWire }> {
  return connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'erin', database: 'via_fair', password: token, timeoutMs: 10_000 });
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

const ROWS = 100_000;
const ROW_BYTES = 2000; // about 200 MB in all

test('a paused reader of a 200 MB result does not stall 50 queries of another client through the same connector', async () => {
  const gwRssBefore = rssMb(gw.process.pid!);
  const cnRssBefore = rssMb(connector.pid);

  const { wire: slow } = await login();
  slow.send(queryMessage(`select g, repeat('x', ${ROW_BYTES}) from generate_series(1, ${ROWS}) g`));
  await slow.next(10_000); // RowDescription: the result is flowing
  slow.pause();
  // Let every buffer between the target and the paused client fill up.
  await new Promise((r) => setTimeout(r, 1500));
  const slowBytes = slow.bytesReceived;
  assert.ok(slowBytes < (ROWS * ROW_BYTES) / 2, `the slow client has not received the bulk of the result (${slowBytes} bytes)`);
  const waiting = await cluster.sql("select wait_event from pg_stat_activity where query like 'select g, repeat%' and state = 'active'");
  assert.equal(waiting, 'ClientWrite', 'the target is held back by flow control (waiting to write to its client)');

  // A fast client through the same connector: a new session and 50 queries.
  const t0 = Date.now();
  const { wire: fast } = await login();
  for (let i = 0; i < 50; i++) {
    const r = await fast.queryOk(`select ${i} as i, repeat('y', 100) as pad`, 5000);
    assert.deepEqual(r.rows[0], [String(i), 'y'.repeat(100)]);
  }
  const fastMs = Date.now() - t0;
  fast.terminate();
  assert.ok(fastMs < 3000, `the fast client's login and 50 queries took ${fastMs} ms while the slow one was paused`);
  assert.equal(slow.bytesReceived, slowBytes, 'the slow client was still paused meanwhile');
  const entry = (await listConnectors(gw)).find((c) => c.name === 'fair');
  assert.ok((entry?.openStreams ?? 0) >= 1);

  // Nobody buffered the result on the slow client's behalf.
  const gwGrowth = rssMb(gw.process.pid!) - gwRssBefore;
  const cnGrowth = rssMb(connector.pid) - cnRssBefore;
  assert.ok(gwGrowth < 64, `gateway memory grew by ${gwGrowth.toFixed(0)} MB while the result was held back`);
  assert.ok(cnGrowth < 64, `connector memory grew by ${cnGrowth.toFixed(0)} MB while the result was held back`);

  // The slow client then reads the whole result, intact.
  slow.resume();
  let rows = 0;
  let last = 0;
  let tag = '';
  await slow.consume((m) => {
    if (m.type === 'D') {
      rows++;
      if (rows % 10_000 === 0 || rows === ROWS) last = Number(decodeDataRow(m.body)[0]);
    } else if (m.type === 'C') {
      tag = m.body.toString('latin1', 0, m.body.length - 1);
    } else if (m.type === 'E') {
      throw new Error(`error in the slow result: ${m.body.toString('latin1')}`);
    }
    return m.type === 'Z';
  }, 30_000);
  assert.equal(rows, ROWS);
  assert.equal(last, ROWS);
  assert.equal(tag, `SELECT ${ROWS}`);
  slow.terminate();
});

test('two clients reading large results at once through one connector both finish', async () => {
  const run = async (): Promise<number> => {
    const { wire } = await login();
    wire.send(queryMessage(`select g, repeat('z', 1000) from generate_series(1, 20000) g`));
    let rows = 0;
    await wire.consume((m) => { if (m.type === 'D') rows++; return m.type === 'Z'; }, 30_000);
    wire.terminate();
    return rows;
  };
  assert.deepEqual(await Promise.all([run(), run(), run()]), [20000, 20000, 20000]);
});
