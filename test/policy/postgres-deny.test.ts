// PostgreSQL statements denied by the policy, with real clients and a real server: psql, the pg
// driver (extended protocol) and raw protocol sequences. Each case checks the client's error
// (42501 naming the rule), that the target did not run it (looking at the database directly), and
// that the session and its transaction are left exactly as PostgreSQL leaves them after a failed
// statement. The recording holds each statement with its verdict.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import {
  bindMessage, connectAndLogin, decodeError, describeMessages, executeMessage, parseMessage, queryMessage, syncMessage, type WireMessage,
} from '../support/pg-wire.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';
import { endedSessionEvents } from '../support/recordings.ts';

let cluster: PgCluster;
let gw: TestGateway;
let agentToken: string;
let humanToken: string;
let dir: string;

const POLICY = `
rules:
  - name: no-drops-for-agents
    when: { kinds: [agent] }
    sql: { commands: ["DROP *", "TRUNCATE TABLE"] }
    action: deny
  - name: no-kill
    sql: { functions: [pg_terminate_backend] }
    action: deny
  - name: hold-unbounded-deletes
    when: { kinds: [agent] }
    sql: { commands: [DELETE], without_where: true }
    action: hold
  - name: flag-updates
    sql: { commands: [UPDATE] }
    action: audit
`;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-pg-deny-'));
  cluster = await startPgCluster();
  await cluster.sql('CREATE TABLE keep (v int); CREATE TABLE log (v int); GRANT ALL ON keep, log TO scram_user;', 'app');
  gw = await startTestGateway();
  agentToken = await gw.setupPostgres({ identity: 'bot', connection: 'app', cluster, kind: 'agent' });
  await gw.cliOk(['identity', 'add', 'alice', '--kind', 'human']);
  humanToken = (await gw.cliOk(['token', 'issue', 'alice', '--ttl', '1h'])).trim().split('\n').pop()!;
  await gw.cliOk(['grant', 'alice', 'app']);
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  await gw.cliOk(['policy', 'apply', file]);
});

after(async () => {
  await gw?.stop();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const count = async (table: string) => Number(await cluster.sql(`select count(*) from ${table}`, 'app'));
const exists = async (table: string) => (await cluster.sql(`select to_regclass('public.${table}') is not null`, 'app')) === 't';

async function psql(identity: string, token: string, sql: string, app = 'psql-policy') {
  return run('psql', [gw.dsn('app', identity, `application_name=${app}`), '-XAtq', '-v', 'ON_ERROR_STOP=0', '-c', sql], { env: { ...process.env, PGPASSWORD: token } });
}

const sessionOf = (app: string): Promise<EventView[]> => endedSessionEvents(gw, app);

const codes = (messages: WireMessage[]) => messages.filter((m) => m.type === 'E').map((m) => decodeError(m.body).code);

test('psql: DROP TABLE by an agent fails with 42501 naming the rule; the table is untouched; the recording holds the verdict', async () => {
  const r = await psql('bot', agentToken, 'DROP TABLE keep', 'psql-drop');
  assert.match(r.stderr, /ERROR: {2}gatehouse: the statement DROP TABLE is denied by rule "no-drops-for-agents"/);
  assert.match(r.stderr, /DETAIL: {2}policy version 1, rule "no-drops-for-agents"/);
  assert.ok(await exists('keep'), 'the table is still there');
  const events = await sessionOf('psql-drop');
  const q = events.find((e) => e.type === 'query')!;
  assert.equal(q.data.text, 'DROP TABLE keep');
  assert.deepEqual(q.data.policy, { decision: 'deny', rule: 'no-drops-for-agents', version: 1, reason: 'the statement DROP TABLE is denied by rule "no-drops-for-agents"' });
  const result = events.find((e) => e.type === 'result' && e.data.ref === q.seq)!;
  assert.equal((result.data.error as { code: string }).code, '42501');
  assert.ok(!JSON.stringify(events).includes('gatehouse-policy-denied-'), 'the stand-in never shows in the record');
  const shown = await gw.cliOk(['sessions', 'show', (JSON.parse(await gw.cliOk(['sessions', 'list', '--json'])) as SessionView[]).find((s) => s.applicationName === 'psql-drop')!.id]);
  assert.match(shown, /DROP TABLE keep\n\s+✖ DENIED by rule "no-drops-for-agents" \(policy v1\): the statement DROP TABLE is denied/);
});

test('evasions through psql: comments, case, quoting, chains and dollar quotes are all refused and run nothing', async () => {
  for (const sql of [
    '/* hi */ dRoP /* x */ TaBlE "keep"',
    '-- c\nDROP\n\tTABLE keep',
    "insert into log values (1); drop table keep",
    'select $$; drop table nothing; $$; truncate keep',
    'select pg_terminate_backend(pg_backend_pid())',
  ]) {
    const r = await psql('bot', agentToken, sql);
    assert.match(r.stderr, /ERROR: {2}gatehouse: .* by rule "(no-drops-for-agents|no-kill)"/, sql);
  }
  assert.ok(await exists('keep'));
  assert.equal(await count('log'), 0, 'nothing of a denied message ran, not even its harmless part');
});

test('the same statements are allowed for a human (scope), and audit decisions are recorded but allowed', async () => {
  await cluster.sql('CREATE TABLE scratch (v int); ALTER TABLE scratch OWNER TO scram_user;', 'app');
  const r = await psql('alice', humanToken, 'DROP TABLE scratch; UPDATE log SET v = 2', 'psql-human');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await exists('scratch'), false);
  const events = await sessionOf('psql-human');
  assert.equal((events.find((e) => e.type === 'query')!.data.policy as { decision: string }).decision, 'audit');
});

test('inside a transaction a denied statement aborts it, as any failed statement does: later statements fail with 25P02 and COMMIT rolls back', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'tx-deny' } });
  await wire.queryOk('BEGIN');
  await wire.queryOk('INSERT INTO log VALUES (10)');
  const denied = await wire.query('DROP TABLE keep');
  assert.equal(denied.errors[0]?.code, '42501');
  assert.equal(denied.status, 'E', 'the transaction is aborted');
  const next = await wire.query('SELECT 1');
  assert.equal(next.errors[0]?.code, '25P02');
  const commit = await wire.query('COMMIT');
  assert.deepEqual(commit.tags, ['ROLLBACK']);
  assert.equal(await count('log'), 0, 'the insert was rolled back with the transaction');
  const after = await wire.queryOk('SELECT 41 + 1');
  assert.deepEqual(after.rows, [['42']]);
  wire.terminate();
  assert.ok(await exists('keep'));
});

test('extended protocol: a denied Parse fails at Parse, the rest of the batch is skipped to Sync, earlier statements of the batch roll back', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'ext-deny' } });
  wire.send([
    parseMessage('', 'INSERT INTO log VALUES ($1)'), bindMessage('', '', ['20']), executeMessage(),
    parseMessage('evil', 'drop table keep'), bindMessage('', 'evil', []), executeMessage(),
    syncMessage(),
  ]);
  const batch = await wire.readUntilReady();
  assert.deepEqual(codes(batch), ['42501'], describeMessages(batch));
  assert.equal(await count('log'), 0, 'the implicit transaction of the batch rolled back');
  // The named statement was never created on the server.
  wire.send([bindMessage('', 'evil', []), executeMessage(), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), ['26000']);
  // And the session goes on.
  wire.send([parseMessage('', 'select $1::int + 1'), bindMessage('', '', ['1']), executeMessage(), syncMessage()]);
  const ok = await wire.readUntilReady();
  assert.deepEqual(codes(ok), []);
  wire.terminate();
  assert.ok(await exists('keep'));
});

test('the pg driver (extended protocol, parameters): denied statements reject with 42501; the connection stays usable', async () => {
  const client = new pg.Client({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, application_name: 'node-pg-deny' });
  await client.connect();
  try {
    await assert.rejects(client.query('DROP TABLE keep'), (err: Error & { code?: string }) => err.code === '42501' && /no-drops-for-agents/.test(err.message));
    await assert.rejects(client.query('select pg_terminate_backend($1)', [1]), (err: Error & { code?: string }) => err.code === '42501' && /no-kill/.test(err.message));
    await assert.rejects(client.query('TRUNCATE TABLE keep'), (err: Error & { code?: string }) => err.code === '42501' && /no-drops-for-agents/.test(err.message));
    const r = await client.query('select $1::int * 2 as v', [21]);
    assert.equal(r.rows[0].v, 42);
    await client.query('DELETE FROM log WHERE v = $1', [99]);
  } finally {
    await client.end();
  }
  assert.ok(await exists('keep'));
});

test('a denied statement split across many reads (a long comment) is held back whole and refused', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'split-deny' } });
  const sql = `DROP TABLE keep /* ${'x'.repeat(600_000)} */`;
  const r = await wire.query(sql);
  assert.equal(r.errors[0]?.code, '42501');
  assert.ok(await exists('keep'));
  assert.deepEqual((await wire.queryOk('select 1')).rows, [['1']]);
  wire.terminate();
});

test('a policy applied while a session is open decides its next statement', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'alice', database: 'app', password: humanToken, params: { application_name: 'live-change' } });
  assert.deepEqual((await wire.queryOk("select 'before'")).rows, [['before']]);
  const file = path.join(dir, 'stricter.yaml');
  writeFileSync(file, POLICY + '  - name: no-selects-of-secrets\n    sql: { tables: [secrets] }\n    action: deny\n');
  await gw.cliOk(['policy', 'apply', file]);
  const denied = await wire.query('select * from secrets');
  assert.equal(denied.errors[0]?.code, '42501');
  assert.match(denied.errors[0]!.message, /no-selects-of-secrets/);
  wire.send([queryMessage('select 2')]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.terminate();
});

test('a fast-path FunctionCall (by OID, no text) is refused while a deny rule could apply: pg_terminate_backend cannot be called around the rule', async () => {
  const victim = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'alice', database: 'app', password: humanToken, params: { application_name: 'victim' } });
  const pid = Number((await victim.wire.queryOk('select pg_backend_pid()')).rows[0]![0]);
  const oid = Number(await cluster.sql("select 'pg_catalog.pg_terminate_backend(integer,bigint)'::regprocedure::oid", 'app'));
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'fastpath' } });
  const arg = (n: number, bytes: number) => { const b = Buffer.alloc(bytes); if (bytes === 4) b.writeInt32BE(n); else b.writeBigInt64BE(BigInt(n)); return b; };
  const i16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; };
  const body = Buffer.concat([(() => { const b = Buffer.alloc(4); b.writeUInt32BE(oid); return b; })(), i16(1), i16(1), i16(2),
    (() => { const l = Buffer.alloc(4); l.writeInt32BE(4); return l; })(), arg(pid, 4), (() => { const l = Buffer.alloc(4); l.writeInt32BE(8); return l; })(), arg(0, 8), i16(0)]);
  wire.send([Buffer.concat([Buffer.from('F'), (() => { const l = Buffer.alloc(4); l.writeInt32BE(4 + body.length); return l; })(), body])]);
  const answer = await wire.readUntilReady();
  assert.deepEqual(codes(answer), ['42501'], describeMessages(answer));
  assert.match(decodeError(answer.find((m) => m.type === 'E')!.body).message, /a fast-path call of function OID \d+ cannot be judged by its text; refused because rule "no-drops-for-agents" could apply/);
  assert.deepEqual((await victim.wire.queryOk('select 1')).rows, [['1']], 'the other backend is alive');
  victim.wire.terminate();
  wire.terminate();
});
