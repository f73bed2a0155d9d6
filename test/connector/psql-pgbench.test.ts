// A PostgreSQL reached only through a connector (a separate `gatehouse connector` process) is used
// with psql, node-postgres and pgbench through the gateway, and each session is recorded exactly
// as the same session over the embedded (direct) path.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import {
  addViaConnection, enrollConnector, getRecording, listConnectors, pgEnv, sessionIds, waitForNewSessions,
  type ConnectorProcess, type RecordedEvent, type Recording,
} from '../support/connector.ts';

let cluster: PgCluster;
let gw: TestGateway;
let connector: ConnectorProcess;
let token: string;

before(async () => {
  cluster = await startPgCluster();
  gw = await startTestGateway();
  connector = await enrollConnector(gw, 'edge', [`${cluster.host}:${cluster.port}`]);
  // The same target twice: once on the embedded path, once through the connector.
  token = await gw.setupPostgres({ identity: 'alice', connection: 'direct', cluster });
  await addViaConnection(gw, { name: 'tunneled', via: ['edge'], host: cluster.host, port: cluster.port, identity: 'alice' });
});

after(async () => {
  await connector?.kill('SIGTERM');
  await gw?.stop();
  await cluster?.stop();
});

function ok(r: RunResult): RunResult {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function psql(connection: string, args: string[], input?: string): Promise<RunResult> {
  return run('psql', [gw.dsn(connection, 'alice'), '-X', '-w', ...args], { env: pgEnv({ PGPASSWORD: token }), input, timeoutMs: 30_000 });
}

function pgbench(connection: string, args: string[]): Promise<RunResult> {
  return run('pgbench', ['-h', gw.pgHost, '-p', String(gw.pgPort), '-U', 'alice', ...args, connection], {
    env: pgEnv({ PGPASSWORD: token, PGSSLMODE: 'require' }), timeoutMs: 60_000,
  });
}

/** The recording without what legitimately differs between two runs: times, durations, client port, connection id/name, backend pid. */
function normalize(rec: Recording): unknown[] {
  return rec.events.map((e: RecordedEvent) => {
    const data = structuredClone(e.data) as Record<string, unknown>;
    delete data.durationUs;
    if (e.type === 'session.start') {
      delete data.clientAddr;
      delete data.connection;
      // The grant that admitted the session is the connection's own: same shape, other names.
      const access = data.access as { allowed: boolean; via?: { action: string; subject: string } } | undefined;
      data.access = access ? { allowed: access.allowed, action: access.via?.action, subject: access.via?.subject } : undefined;
      const up = data.upstream as Record<string, unknown> | undefined;
      if (up) delete up.pid;
    }
    return { seq: e.seq, type: e.type, data };
  });
}

async function recordOne(connection: string, fn: () => Promise<void>): Promise<Recording> {
  const before = await sessionIds(gw, { connection });
  await fn();
  const fresh = await waitForNewSessions(gw, before, 1, { connection });
  assert.equal(fresh.length, 1, 'exactly one new session');
  return getRecording(gw, fresh[0].id);
}

const SCRIPT = `create temp table items (id int primary key, name text);
insert into items values (1, 'alpha'), (2, 'beta'), (3, 'gamma');
insert into items select g, 'item' || g from generate_series(4, 40) g;
select id, name from items order by id;
begin;
update items set name = upper(name) where id <= 2;
select * from no_such_table;
rollback;
do $$ begin raise notice 'hello from %', 'plpgsql'; end $$;
select count(*) from items;
set application_name = 'renamed';
copy (select id from items where id < 4 order by id) to stdout;
`;

test('psql through gateway → connector → PostgreSQL: same output and same recording as the embedded path', async () => {
  const outputs: Record<string, RunResult> = {};
  const recs: Record<string, Recording> = {};
  for (const connection of ['direct', 'tunneled']) {
    recs[connection] = await recordOne(connection, async () => { outputs[connection] = await psql(connection, ['-f', '-'], SCRIPT); });
  }
  ok(outputs.tunneled);
  assert.match(outputs.tunneled.stdout, /\(40 rows\)/);
  assert.match(outputs.tunneled.stderr, /relation "no_such_table" does not exist/);
  assert.match(outputs.tunneled.stderr, /NOTICE: {2}hello from plpgsql/);
  assert.equal(outputs.tunneled.stdout, outputs.direct.stdout, 'the client sees the same output either way');
  assert.equal(outputs.tunneled.stderr, outputs.direct.stderr);

  const via = recs.tunneled;
  assert.equal(via.session.connection, 'tunneled');
  assert.deepEqual(via.session.target, { host: cluster.host, port: cluster.port, database: 'app', user: 'scram_user' });
  assert.equal(via.session.endReason, 'client terminated');
  const texts = via.events.filter((e) => e.type === 'query').map((e) => String(e.data.text).trim());
  assert.deepEqual(texts, SCRIPT.trim().split('\n'), 'every statement recorded, in order');
  assert.deepEqual(normalize(via), normalize(recs.direct), 'the recording through the connector equals the embedded one');
});

test('node-postgres (extended protocol, parameters, transaction) through the connector: recorded as on the embedded path', async () => {
  const recs: Record<string, Recording> = {};
  const results: Record<string, unknown> = {};
  for (const connection of ['direct', 'tunneled']) {
    recs[connection] = await recordOne(connection, async () => {
      const client = new pg.Client({ host: gw.pgHost, port: gw.pgPort, user: 'alice', database: connection, password: token, ssl: { rejectUnauthorized: false } });
      await client.connect();
      try {
        const out: unknown[] = [];
        out.push((await client.query('select $1::int + $2::int as sum, $3::text as t', [40, 2, 'x'])).rows);
        await client.query('begin');
        out.push((await client.query({ name: 'series', text: 'select g from generate_series(1, $1::int) g', values: [5] })).rows);
        out.push((await client.query({ name: 'series', text: 'select g from generate_series(1, $1::int) g', values: [2] })).rows);
        await client.query('commit');
        await assert.rejects(client.query('select $1::int / 0', [1]), /division by zero/);
        results[connection] = out;
      } finally {
        await client.end();
      }
    });
  }
  assert.deepEqual(results.tunneled, [[{ sum: 42, t: 'x' }], [1, 2, 3, 4, 5].map((g) => ({ g })), [{ g: 1 }, { g: 2 }]]);
  assert.deepEqual(results.tunneled, results.direct);
  const executes = recs.tunneled.events.filter((e) => e.type === 'execute');
  assert.ok(executes.length >= 4, `extended-protocol executions recorded: ${JSON.stringify(recs.tunneled.events.map((e) => e.type))}`);
  assert.deepEqual(normalize(recs.tunneled), normalize(recs.direct));
});

test('pgbench -i, -S -T 3 and -S -C through the connector: no failures, every transaction recorded', async () => {
  ok(await pgbench('tunneled', ['-i', '-s', '1', '-q']));

  const beforeS = await sessionIds(gw, { connection: 'tunneled' });
  const s = ok(await pgbench('tunneled', ['-S', '-T', '3', '-c', '4', '-j', '2', '-n']));
  const processed = Number(/number of transactions actually processed: (\d+)/.exec(s.stdout)?.[1]);
  assert.ok(processed > 100, `pgbench -S ran transactions: ${s.stdout}`);
  assert.match(s.stdout, /number of failed transactions: 0 /);
  // pgbench's 4 clients (+ its initial connection); every select recorded with its outcome.
  const sessionsS = await waitForNewSessions(gw, beforeS, 4, { connection: 'tunneled' });
  let selects = 0;
  for (const sess of sessionsS) {
    assert.equal(sess.endReason, 'client terminated', `session ${sess.id} ended cleanly`);
    const rec = await getRecording(gw, sess.id);
    const stmts = rec.events.filter((e) => e.type === 'query' && /^SELECT abalance FROM pgbench_accounts WHERE aid = \d+;?$/.test(String(e.data.text)));
    for (const st of stmts) {
      const res = rec.events.find((e) => e.type === 'result' && e.data.ref === st.seq);
      assert.ok(res, `statement #${st.seq} has a result`);
      assert.equal(res.data.tag, 'SELECT 1');
      assert.equal(res.data.error, undefined);
    }
    selects += stmts.length;
  }
  assert.ok(selects >= processed && selects <= processed + 4, `recorded ${selects} selects for ${processed} transactions`);

  const beforeC = await sessionIds(gw, { connection: 'tunneled' });
  const c = ok(await pgbench('tunneled', ['-S', '-C', '-T', '2', '-c', '2', '-n']));
  const processedC = Number(/number of transactions actually processed: (\d+)/.exec(c.stdout)?.[1]);
  assert.ok(processedC > 10, `pgbench -C ran transactions: ${c.stdout}`);
  assert.match(c.stdout, /number of failed transactions: 0 /);
  const sessionsC = await waitForNewSessions(gw, beforeC, processedC, { connection: 'tunneled' });
  assert.ok(sessionsC.length >= processedC && sessionsC.length <= processedC + 3, `one session per transaction: ${sessionsC.length} for ${processedC}`);
  assert.ok(sessionsC.every((x) => x.endReason === 'client terminated'), 'every -C session ended cleanly');

  const entry = (await listConnectors(gw)).find((x) => x.name === 'edge');
  assert.equal(entry?.status, 'connected');
  assert.equal(connector.running, true, 'the connector process is still running');
});
