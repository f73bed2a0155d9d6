import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';

let pg: PgCluster;
let gw: TestGateway;

before(async () => {
  pg = await startPgCluster();
  gw = await startTestGateway();
});
after(async () => {
  await gw?.stop();
  await pg?.stop();
});

test('psql runs a query through the gateway and the session is recorded with its outcome', async () => {
  const token = await gw.setupPostgres({ identity: 'alice', connection: 'app', cluster: pg });
  const r = await run('psql', [gw.dsn('app', 'alice'), '-XAtc', "select 40 + 2 as answer"], { env: { ...process.env, PGPASSWORD: token } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '42');
  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--json'])) as Array<{ id: string; identity: { name: string; kind: string }; endReason: string }>;
  const s = sessions.find((x) => x.identity.name === 'alice')!;
  assert.equal(s.identity.kind, 'agent');
  const detail = JSON.parse(await gw.cliOk(['sessions', 'show', s.id, '--json'])) as { events: Array<{ type: string; data: Record<string, unknown> }> };
  const q = detail.events.find((e) => e.type === 'query')!;
  assert.equal(q.data.text, 'select 40 + 2 as answer');
  const res = detail.events.find((e) => e.type === 'result')!;
  assert.equal(res.data.tag, 'SELECT 1');
  assert.deepEqual(res.data.sample, [['42']]);
  assert.ok(!gw.logs().includes(token), 'token must never appear in logs');
});
