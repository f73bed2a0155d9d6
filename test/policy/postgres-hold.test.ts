// Holding PostgreSQL statements for approval, with a real psql waiting in its session while another
// identity decides through the CLI: approve (the statement runs in the same session), deny (42501
// with the approver's reason), timeout (57014), a CancelRequest or a disconnect while held
// (withdrawn), self-approval and approvers without the approve grant refused, a quorum of two,
// the webhook announcing requests and decisions, and the course of each hold in the recording.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { cancelRequest, connectAndLogin } from '../support/pg-wire.ts';
import type { EventView } from '../../src/cli/format.ts';
import { endedSessionEvents } from '../support/recordings.ts';

let cluster: PgCluster;
let gw: TestGateway;
let dir: string;
let webhook: Server;
const announced: Array<{ event: string; approval: { id: string; status: string } }> = [];
const tokens: Record<string, string> = {};

const POLICY = `
rules:
  - name: two-for-truncates
    sql: { commands: ["TRUNCATE TABLE"] }
    action: hold
    quorum: 2
  - name: quick-hold
    sql: { tables: [fast] }
    action: hold
    timeout: 2s
  - name: hold-unbounded-deletes
    when: { kinds: [agent] }
    sql: { commands: [DELETE, UPDATE], without_where: true }
    action: hold
`;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-pg-hold-'));
  webhook = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => { announced.push(JSON.parse(body) as (typeof announced)[number]); res.end('ok'); });
  });
  await new Promise<void>((r) => webhook.listen(0, '127.0.0.1', () => r()));
  cluster = await startPgCluster();
  await cluster.sql('CREATE TABLE t (v int); CREATE TABLE fast (v int); GRANT ALL ON t, fast TO scram_user;', 'app');
  gw = await startTestGateway({ env: { GATEHOUSE_APPROVALS_WEBHOOK: `http://127.0.0.1:${(webhook.address() as { port: number }).port}/hook` } });
  tokens.bot = await gw.setupPostgres({ identity: 'bot', connection: 'app', cluster, kind: 'agent' });
  for (const [name, action] of [['dora', 'approve'], ['dan', 'approve'], ['eve', 'connect']] as const) {
    await gw.cliOk(['identity', 'add', name, '--kind', 'human']);
    await gw.cliOk(['grant', name, 'app', '--action', action]);
    tokens[name] = (await gw.cliOk(['token', 'issue', name, '--ttl', '1h'])).trim().split('\n').pop()!;
  }
  await gw.cliOk(['grant', 'bot', 'app', '--action', 'approve']); // may approve others' requests, never its own
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  await gw.cliOk(['policy', 'apply', file]);
});

after(async () => {
  await gw?.stop();
  await cluster?.stop();
  await new Promise<void>((r) => webhook?.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

const rows = async (table: string) => Number(await cluster.sql(`select count(*) from ${table}`, 'app'));

interface Pending { id: string; requester: { name: string; kind: string }; connection: string; rule: string; action: { kind: string; text: string }; session: string }

async function pendingRequest(match: (p: Pending) => boolean, as = 'dora'): Promise<Pending> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const list = JSON.parse(await gw.cliOk(['approvals', 'list', '--json'], { token: tokens[as] })) as Pending[];
    const found = list.find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no pending request: ${JSON.stringify(list)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function startPsql(sql: string, app: string) {
  const child = spawn('psql', [gw.dsn('app', 'bot', `application_name=${app}`), '-X', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: { ...process.env, PGPASSWORD: tokens.bot } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((r) => child.on('close', (code) => r({ code, stdout, stderr })));
  return { done, stderr: () => stderr };
}

const sessionEvents = (app: string): Promise<EventView[]> => endedSessionEvents(gw, app);

test('a held DELETE waits in psql until another identity approves it, then runs in the same session; self-approval is refused', async () => {
  await cluster.sql('INSERT INTO t SELECT generate_series(1, 5)', 'app');
  const psql = startPsql('DELETE FROM t', 'psql-held');
  const req = await pendingRequest((p) => p.action.text === 'DELETE FROM t');
  assert.equal(req.requester.name, 'bot');
  assert.equal(req.requester.kind, 'agent');
  assert.equal(req.rule, 'hold-unbounded-deletes');
  assert.equal(req.connection, 'app');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await rows('t'), 5, 'nothing ran while held');
  assert.match(psql.stderr(), new RegExp(`NOTICE: {2}gatehouse: this statement is held for approval: .*request ${req.id}`));
  const listed = await gw.cliOk(['approvals', 'list'], { token: tokens.dora });
  assert.match(listed, new RegExp(`${req.id}\\s+bot \\(agent\\)\\s+app\\s+hold-unbounded-deletes`));

  const self = await gw.cli(['approvals', 'approve', req.id], { token: tokens.bot });
  assert.notEqual(self.code, 0);
  assert.match(self.stderr, /no identity may approve or deny its own request/);
  const noGrant = await gw.cli(['approvals', 'approve', req.id], { token: tokens.eve });
  assert.match(noGrant.stderr, /may not decide requests on connection "app": it needs the approve grant/);
  assert.match(await gw.cliOk(['approvals', 'approve', req.id, '--reason', 'cleanup ticket 42'], { token: tokens.dora }), /approved .*: the action runs now/);

  const out = await psql.done;
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /^DELETE 5$/m);
  assert.equal(await rows('t'), 0);
  const again = await gw.cli(['approvals', 'approve', req.id], { token: tokens.dan });
  assert.match(again.stderr, /is already approved/);

  const events = await sessionEvents('psql-held');
  const q = events.find((e) => e.type === 'query')!;
  assert.equal((q.data.policy as { decision: string }).decision, 'hold');
  assert.equal(events.find((e) => e.type === 'policy.hold')?.data.request, req.id);
  const decided = events.find((e) => e.type === 'policy.decision')!;
  assert.equal(decided.data.kind, 'approved');
  assert.deepEqual(decided.data.by, ['dora']);
  assert.equal((events.find((e) => e.type === 'result' && e.data.ref === q.seq)!.data as { tag: string }).tag, 'DELETE 5');
  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--json'])) as Array<{ id: string; applicationName: string }>;
  const shown = await gw.cliOk(['sessions', 'show', sessions.find((x) => x.applicationName === 'psql-held')!.id]);
  assert.match(shown, /✖ HELD by rule "hold-unbounded-deletes" \(policy v1\)/);
  assert.match(shown, new RegExp(`HOLD {5}approval request ${req.id} \\(rule hold-unbounded-deletes\\)`));
  assert.match(shown, new RegExp(`DECISION request ${req.id}: approved by dora`));
  assert.ok(announced.some((a) => a.event === 'approval.requested' && a.approval.id === req.id), 'the webhook announced the request');
  assert.ok(announced.some((a) => a.event === 'approval.decided' && a.approval.id === req.id && a.approval.status === 'approved'), 'and its decision');
});

test('a denied request fails the statement with 42501 and the approver\'s reason; the session goes on', async () => {
  await cluster.sql('INSERT INTO t VALUES (1), (2)', 'app');
  const client = new pg.Client({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: tokens.bot, application_name: 'pg-denied-hold' });
  await client.connect();
  try {
    const running = client.query('UPDATE t SET v = 0').then(() => null, (err: Error & { code?: string }) => err);
    const req = await pendingRequest((p) => p.action.text === 'UPDATE t SET v = 0');
    await gw.cliOk(['approvals', 'deny', req.id, '--reason', 'not during business hours'], { token: tokens.dan });
    const err = await running;
    assert.equal(err?.code, '42501');
    assert.match(String(err?.message), /^gatehouse: denied by dan: not during business hours$/);
    assert.equal(Number(await cluster.sql('select count(*) from t where v = 0', 'app')), 0);
    assert.equal((await client.query('select 1 as one')).rows[0].one, 1);
  } finally {
    await client.end();
  }
});

test('not decided in time: 57014, nothing ran', async () => {
  await cluster.sql('INSERT INTO fast VALUES (1)', 'app');
  const client = new pg.Client({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: tokens.bot });
  await client.connect();
  try {
    const t0 = Date.now();
    await assert.rejects(client.query('DELETE FROM fast WHERE v = 1'), (err: Error & { code?: string }) => err.code === '57014' && /was not decided within 2s/.test(err.message));
    assert.ok(Date.now() - t0 >= 1900, 'it waited for its timeout');
    assert.equal(await rows('fast'), 1);
  } finally {
    await client.end();
  }
});

test('a CancelRequest while held withdraws the request (57014, as a cancelled statement); a disconnect withdraws it too', async () => {
  const { wire, startup } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: tokens.bot });
  const answer = wire.query('DELETE FROM t', 15_000);
  const req = await pendingRequest((p) => p.action.text === 'DELETE FROM t');
  await new Promise<void>((resolve, reject) => {
    const s = connect(gw.pgPort, gw.pgHost, () => s.end(cancelRequest(startup.pid, startup.secret)));
    s.on('close', () => resolve());
    s.on('error', reject);
  });
  const r = await answer;
  assert.equal(r.errors[0]?.code, '57014');
  assert.equal(r.errors[0]?.message, 'canceling statement due to user request');
  assert.deepEqual((await wire.queryOk('select 2')).rows, [['2']]);
  const list = JSON.parse(await gw.cliOk(['approvals', 'list', '--json'], { token: tokens.dora })) as Pending[];
  assert.equal(list.some((p) => p.id === req.id), false, 'withdrawn: no longer pending');
  const approve = await gw.cli(['approvals', 'approve', req.id], { token: tokens.dora });
  assert.match(approve.stderr, /is already withdrawn/);

  // Held, then the client goes away.
  const { wire: w2 } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: tokens.bot });
  w2.send([Buffer.from([0x51, 0, 0, 0, 4 + 14]), Buffer.from('DELETE FROM t\0')]);
  const gone = await pendingRequest((p) => p.action.text === 'DELETE FROM t');
  w2.destroy();
  const deadline = Date.now() + 5000;
  for (;;) {
    const r2 = await gw.cli(['approvals', 'approve', gone.id], { token: tokens.dora });
    if (/is already withdrawn/.test(r2.stderr)) break;
    assert.ok(Date.now() < deadline, `the request is withdrawn when the client goes away: ${r2.stdout}${r2.stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
});

test('a quorum of two needs two different approvers', async () => {
  await cluster.sql('INSERT INTO t VALUES (7)', 'app');
  const before = await rows('t');
  const client = new pg.Client({ host: gw.pgHost, port: gw.pgPort, user: 'eve', database: 'app', password: tokens.eve });
  await client.connect();
  try {
    const running = client.query('TRUNCATE TABLE t').then(() => null, (err: Error) => err);
    const req = await pendingRequest((p) => p.action.text === 'TRUNCATE TABLE t');
    assert.match(await gw.cliOk(['approvals', 'approve', req.id], { token: tokens.dora }), /1\/2, waiting for more/);
    const twice = await gw.cli(['approvals', 'approve', req.id], { token: tokens.dora });
    assert.match(twice.stderr, /has already approved/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await rows('t'), before, 'one approval is not enough');
    assert.match(await gw.cliOk(['approvals', 'approve', req.id], { token: tokens.bot }), /the action runs now/);
    assert.equal(await running, null);
    assert.equal(await rows('t'), 0);
  } finally {
    await client.end();
  }
});
