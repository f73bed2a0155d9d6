// Another driver than libpq: node-postgres (pure JavaScript, extended protocol, named prepared
// statements, binary parameters, a connection pool) works through the gateway and is recorded.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let cluster: PgCluster;
let gw: TestGateway;
let token: string;

before(async () => {
  cluster = await startPgCluster();
  await cluster.sql('CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, \'item \' || g FROM generate_series(1, 50) g; GRANT ALL ON items TO scram_user;', 'app');
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'node-app', connection: 'app', cluster });
});
after(async () => {
  await gw?.stop();
  await cluster?.stop();
});

test('node-postgres pool over TLS: parameters, named statements, bytea, transactions, errors, concurrency; all recorded', async () => {
  const pool = new pg.Pool({
    host: gw.pgHost, port: gw.pgPort, database: 'app', user: 'node-app', password: token, ssl: { rejectUnauthorized: false }, max: 3,
    application_name: 'node-pg-test',
  });
  try {
    assert.deepEqual((await pool.query('select $1::int + $2::int as s, $3::text as t', [40, 2, 'hé'])).rows, [{ s: 42, t: 'hé' }]);
    const named = { name: 'item-by-id', text: 'select name from items where id = $1' };
    const client = await pool.connect();
    try {
      assert.equal((await client.query({ ...named, values: [7] })).rows[0].name, 'item 7');
      assert.equal((await client.query({ ...named, values: [8] })).rows[0].name, 'item 8'); // Bind/Execute only: no Parse
      assert.deepEqual((await client.query({ text: 'select $1::bytea as b', values: [Buffer.from([1, 2, 3, 255])] })).rows[0].b, Buffer.from([1, 2, 3, 255]));
      await client.query('begin');
      await client.query('insert into items values ($1, $2)', [51, 'new']);
      await client.query('rollback');
      await assert.rejects(client.query('select * from nope where x = $1', [1]), (e: Error & { code?: string }) => e.code === '42P01');
    } finally {
      client.release();
    }
    const rows = await Promise.all(Array.from({ length: 20 }, (_, i) => pool.query('select $1::int as i', [i])));
    assert.deepEqual(rows.map((r) => r.rows[0].i), Array.from({ length: 20 }, (_, i) => i));
  } finally {
    await pool.end();
  }
  assert.equal(await cluster.sql('select count(*) from items', 'app'), '50', 'the rolled back insert is gone');

  await new Promise((r) => setTimeout(r, 300));
  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--identity', 'node-app', '--json'])) as Array<{ id: string; applicationName: string }>;
  assert.ok(sessions.length >= 1 && sessions.every((s) => s.applicationName === 'node-pg-test'));
  const executes: Array<{ text: unknown; params: unknown; statement?: unknown; ref?: Record<string, unknown> }> = [];
  const parseResults: Array<{ text: unknown; ref?: Record<string, unknown> }> = [];
  for (const s of sessions) {
    const d = JSON.parse(await gw.cliOk(['sessions', 'show', s.id, '--json'])) as { events: Array<{ seq: number; type: string; data: Record<string, unknown> }> };
    for (const e of d.events) {
      if (e.type === 'parse') parseResults.push({ text: e.data.text, ref: d.events.find((r) => r.type === 'result' && r.data.ref === e.seq)?.data });
      if (e.type !== 'execute') continue;
      const result = d.events.find((r) => r.type === 'result' && r.data.ref === e.seq)?.data;
      executes.push({ text: e.data.text, params: e.data.params, statement: e.data.statement, ref: result });
    }
  }
  const byId = executes.filter((e) => e.statement === 'item-by-id');
  assert.deepEqual(byId.map((e) => [e.text, e.params]), [['select name from items where id = $1', ['7']], ['select name from items where id = $1', ['8']]],
    'the second execution (no Parse) is recorded with the statement text from the first');
  assert.deepEqual(executes.find((e) => e.text === 'select $1::bytea as b')?.params, [{ binary: '010203ff' }]);
  // The server rejects the statement at Parse and skips the Execute: the record says exactly that.
  assert.equal(executes.find((e) => e.text === 'select * from nope where x = $1')?.ref?.skipped, true);
  assert.equal((parseResults.find((r) => r.text === 'select * from nope where x = $1')?.ref?.error as { code: string } | undefined)?.code, '42P01');
  assert.equal(executes.filter((e) => e.text === 'select $1::int as i').length, 20);
});
