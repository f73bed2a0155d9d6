// What the recording holds for real client sessions (psql and pgbench through the gateway):
// session metadata, every statement in order with its outcome (tag, rows, error, bounded sample),
// notices, notifications, parameter changes, extended-protocol executions with their bound
// parameters, the `sessions show` timeline and the `sessions replay` rendering.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

let pg: PgCluster;
let gw: TestGateway;
let tmp: string;
let token: string;

interface Recording { session: SessionView; events: EventView[] }
type Data = Record<string, unknown>;

function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, PGCONNECT_TIMEOUT: '10', ...extra };
}

function psql(args: string[], opts: { input?: string; extra?: string; gateway?: TestGateway; tok?: string; identity?: string } = {}): Promise<RunResult> {
  const g = opts.gateway ?? gw;
  return run('psql', [g.dsn('app', opts.identity ?? 'rec', opts.extra ?? ''), '-X', '-w', ...args], {
    env: cleanEnv({ PGPASSWORD: opts.tok ?? token }), input: opts.input, timeoutMs: 30_000,
  });
}

function pgbench(args: string[], identity = 'bench', tok = token): Promise<RunResult> {
  return run('pgbench', ['-h', gw.pgHost, '-p', String(gw.pgPort), '-U', identity, ...args, 'app'], {
    env: cleanEnv({ PGPASSWORD: tok, PGSSLMODE: 'require' }), timeoutMs: 120_000,
  });
}

async function api<T>(g: TestGateway, p: string): Promise<T> {
  const res = await fetch(`${g.url}${p}`, { headers: { authorization: `Bearer ${g.adminToken}` } });
  assert.equal(res.status, 200, `GET ${p}: ${res.status}`);
  return (await res.json()) as T;
}

async function sessionIds(g: TestGateway = gw): Promise<Set<string>> {
  return new Set((await api<SessionView[]>(g, '/api/v1/sessions?limit=10000')).map((s) => s.id));
}

/** Sessions started since `beforeIds`, oldest first, once all of them have ended. */
async function newRecordings(beforeIds: Set<string>, expected: number, g: TestGateway = gw): Promise<Recording[]> {
  const deadline = Date.now() + 15_000;
  let fresh: SessionView[] = [];
  for (;;) {
    fresh = (await api<SessionView[]>(g, '/api/v1/sessions?limit=10000')).filter((s) => !beforeIds.has(s.id));
    if ((fresh.length >= expected && fresh.every((s) => s.endedAt !== null)) || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  fresh.sort((a, b) => (a.id < b.id ? -1 : 1));
  const out: Recording[] = [];
  for (const s of fresh) out.push(await api<Recording>(g, `/api/v1/sessions/${s.id}`));
  return out;
}

/** Runs `fn` and returns the one session it recorded. */
async function recordOne(fn: () => Promise<void>, g: TestGateway = gw): Promise<Recording> {
  const beforeIds = await sessionIds(g);
  await fn();
  const recs = await newRecordings(beforeIds, 1, g);
  assert.equal(recs.length, 1, `exactly one session recorded, got ${recs.length}`);
  return recs[0];
}

function statements(rec: Recording): EventView[] {
  return rec.events.filter((e) => e.type === 'query' || e.type === 'execute');
}

function resultOf(rec: Recording, stmt: EventView): Data {
  const r = rec.events.filter((e) => e.type === 'result' && e.data.ref === stmt.seq);
  assert.equal(r.length, 1, `exactly one result for statement #${stmt.seq} (${String(stmt.data.text)})`);
  assert.ok(r[0].seq > stmt.seq, 'the result comes after its statement');
  return r[0].data;
}

function stmtByText(rec: Recording, text: string | RegExp): EventView {
  const s = statements(rec).find((e) => (typeof text === 'string' ? e.data.text === text : text.test(String(e.data.text))));
  assert.ok(s, `statement ${String(text)} recorded; have: ${statements(rec).map((e) => String(e.data.text)).join(' | ')}`);
  return s;
}

function ok(r: RunResult): RunResult {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

before(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), 'gatehouse-rec-test-'));
  pg = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'rec', connection: 'app', cluster: pg });
  await gw.cliOk(['identity', 'add', 'bench', '--kind', 'service']);
  await gw.cliOk(['grant', 'bench', 'app']);
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

test('session metadata: identity, client address, application_name, connection, target, times, end reason', async () => {
  const t0 = Date.now();
  const rec = await recordOne(async () => { ok(await psql(['-Atc', 'select 1'])); });
  const t1 = Date.now();
  const s = rec.session;
  assert.match(s.id, /^s_/);
  assert.equal(s.protocol, 'postgres');
  assert.deepEqual({ name: s.identity.name, kind: s.identity.kind }, { name: 'rec', kind: 'agent' });
  assert.match(s.identity.id, /^id_/);
  assert.match(s.clientAddr, /^(::ffff:)?127\.0\.0\.1:\d+$/);
  assert.notEqual(s.clientAddr.split(':').pop(), String(gw.pgPort), 'the client port, not the listener port');
  assert.equal(s.applicationName, 'psql');
  assert.equal(s.connection, 'app');
  assert.deepEqual(s.target, { host: pg.host, port: pg.port, database: 'app', user: 'scram_user' });
  const started = Date.parse(s.startedAt);
  const ended = Date.parse(s.endedAt!);
  assert.ok(started >= t0 - 1000 && started <= t1, `startedAt ${s.startedAt} within the run`);
  assert.ok(ended >= started && ended <= t1 + 5000, `endedAt ${s.endedAt} after start`);
  assert.equal(s.endReason, 'client terminated');
  assert.equal(s.eventCount, rec.events.length);

  const start = rec.events[0];
  assert.equal(start.type, 'session.start');
  assert.equal(start.seq, 0);
  const d = start.data as { identity: Data; clientAddr: string; applicationName: string; connection: Data; target: Data };
  assert.equal(d.identity.name, 'rec');
  assert.equal(d.identity.kind, 'agent');
  assert.equal(d.clientAddr, s.clientAddr);
  assert.equal(d.applicationName, 'psql');
  assert.equal(d.connection.name, 'app');
  assert.deepEqual(d.target, { host: pg.host, port: pg.port, database: 'app', user: 'scram_user' });
  const end = rec.events.at(-1)!;
  assert.equal(end.type, 'session.end');
  assert.equal(end.data.reason, 'client terminated');
  assert.deepEqual(rec.events.map((e) => e.seq), rec.events.map((_, i) => i), 'sequence numbers have no gaps');
  for (let i = 1; i < rec.events.length; i++) assert.ok(rec.events[i].tsUs >= rec.events[i - 1].tsUs, 'timestamps are monotonic');
});

test('a custom application_name in the DSN is recorded (and reaches the target)', async () => {
  const rec = await recordOne(async () => {
    const r = ok(await psql(['-Atc', 'show application_name'], { extra: 'application_name=nightly-agent-42' }));
    assert.equal(r.stdout.trim(), 'nightly-agent-42');
  });
  assert.equal(rec.session.applicationName, 'nightly-agent-42');
  assert.equal((rec.events[0].data as Data).applicationName, 'nightly-agent-42');
});

const SCRIPT = `create table items (id int primary key, name text);
insert into items values (1, 'alpha'), (2, 'beta'), (3, 'gamma');
insert into items select g, 'item' || g from generate_series(4, 5) g;
select id, name from items order by id;
update items set name = upper(name) where id <= 2;
delete from items where id = 5;
select * from no_such_table;
select name from items where id > 100;
`;

test('statements in order, with command tags, rows affected/returned, samples and errors', async () => {
  let out!: RunResult;
  const rec = await recordOne(async () => { out = await psql(['-q', '-f', '-'], { input: SCRIPT }); });
  assert.equal(out.code, 0, out.stderr); // psql without ON_ERROR_STOP keeps going after the error
  assert.match(out.stderr, /ERROR:  relation "no_such_table" does not exist/);
  assert.match(out.stdout, /\(5 rows\)/);

  const texts = statements(rec).map((e) => String(e.data.text).trim());
  const expected = SCRIPT.trim().split('\n').map((l) => l.trim());
  assert.deepEqual(texts, expected, 'every statement, in order, with its exact text');
  assert.ok(statements(rec).every((e) => e.type === 'query'), 'psql uses the simple query protocol');

  const outcome = (text: string): Data => resultOf(rec, stmtByText(rec, text));
  assert.equal(outcome(expected[0]).tag, 'CREATE TABLE');
  const ins = outcome(expected[1]);
  assert.equal(ins.tag, 'INSERT 0 3');
  assert.equal(ins.rows, 3);
  assert.equal(ins.error, undefined);
  assert.equal(outcome(expected[2]).tag, 'INSERT 0 2');
  assert.equal(outcome(expected[2]).rows, 2);

  const sel = outcome(expected[3]);
  assert.equal(sel.tag, 'SELECT 5');
  assert.equal(sel.rows, 5);
  assert.equal(sel.rowsReturned, 5);
  assert.deepEqual(sel.columns, ['id', 'name']);
  assert.deepEqual(sel.sample, [['1', 'alpha'], ['2', 'beta'], ['3', 'gamma'], ['4', 'item4'], ['5', 'item5']]);
  assert.equal(sel.sampleTruncated, undefined);
  assert.equal(typeof sel.durationUs, 'number');
  assert.ok((sel.durationUs as number) >= 0 && (sel.durationUs as number) < 10_000_000);

  assert.equal(outcome(expected[4]).tag, 'UPDATE 2');
  assert.equal(outcome(expected[4]).rows, 2);
  assert.equal(outcome(expected[5]).tag, 'DELETE 1');
  assert.equal(outcome(expected[5]).rows, 1);

  const err = outcome(expected[6]);
  assert.equal(err.tag, undefined);
  const e = err.error as Data;
  assert.equal(e.code, '42P01');
  assert.equal(e.severity, 'ERROR');
  assert.equal(e.message, 'relation "no_such_table" does not exist');

  const empty = outcome(expected[7]);
  assert.equal(empty.tag, 'SELECT 0');
  assert.equal(empty.rows, 0);
  assert.deepEqual(empty.columns, ['name']);
  assert.equal(empty.sample, undefined);

  // The target really holds what the recording says ran.
  assert.equal(await pg.sql('select string_agg(id || name, \',\' order by id) from items', 'app'), '1ALPHA,2BETA,3gamma,4item4');
});

test('a multi-statement simple query is one statement with every tag; an error stops the rest', async () => {
  const rec = await recordOne(async () => {
    const r = ok(await psql(['-Atc', 'select 1 as one; select 2 as two; select 3 as three']));
    assert.equal(r.stdout.trim(), '1\n2\n3', 'psql shows every result');
  });
  const s = stmtByText(rec, 'select 1 as one; select 2 as two; select 3 as three');
  const r = resultOf(rec, s);
  assert.deepEqual(r.tags, ['SELECT 1', 'SELECT 1', 'SELECT 1']);
  assert.equal(r.rows, 3);
  assert.equal(r.rowsReturned, 3);

  const rec2 = await recordOne(async () => {
    const out = await psql(['-Atc', 'select 10; select 1/0; select 30']);
    assert.notEqual(out.code, 0);
    assert.match(out.stderr, /division by zero/);
  });
  const r2 = resultOf(rec2, stmtByText(rec2, 'select 10; select 1/0; select 30'));
  assert.equal((r2.error as Data).code, '22012');
  assert.equal((r2.error as Data).message, 'division by zero');
  assert.ok(r2.tag === 'SELECT 1' || (Array.isArray(r2.tags) && r2.tags.length === 1), `only the first statement completed: ${JSON.stringify(r2)}`);
});

test('the result sample is bounded: 1000 rows → 100 recorded, sampleTruncated; the client still gets all rows', async () => {
  let out!: RunResult;
  const rec = await recordOne(async () => { out = ok(await psql(['-Atc', 'select g, md5(g::text) from generate_series(1, 1000) g'])); });
  const lines = out.stdout.trim().split('\n');
  assert.equal(lines.length, 1000, 'the client is not affected by the sample bound');
  const r = resultOf(rec, statements(rec)[0]);
  assert.equal(r.tag, 'SELECT 1000');
  assert.equal(r.rows, 1000);
  assert.equal(r.rowsReturned, 1000);
  assert.equal(r.sampleTruncated, true);
  const sample = r.sample as string[][];
  assert.equal(sample.length, 100);
  assert.deepEqual(sample[0], lines[0].split('|'));
  assert.deepEqual(sample[99], lines[99].split('|'));

  // Byte bound (64 KiB by default): 100 rows of 1000 bytes is 100 KB.
  const rec2 = await recordOne(async () => { ok(await psql(['-Atc', "select repeat('x', 1000) from generate_series(1, 100)"])); });
  const r2 = resultOf(rec2, statements(rec2)[0]);
  assert.equal(r2.rowsReturned, 100);
  assert.equal(r2.sampleTruncated, true);
  const bytes = (r2.sample as string[][]).flat().reduce((n, c) => n + c.replace(/…\[\d+ bytes\]$/, '').length, 0);
  assert.ok(bytes <= 64 * 1024, `sample holds at most 64 KiB of data (${bytes})`);
  assert.ok(bytes >= 60 * 1024, `and uses the budget (${bytes})`);
});

test('sample bounds come from gatehouse.yaml (recording.sample_rows / sample_bytes) via --config', async () => {
  const cfg = path.join(tmp, 'gatehouse.yaml');
  writeFileSync(cfg, 'recording:\n  sample_rows: 7\n  sample_bytes: 2048\n');
  const g2 = await startTestGateway({ args: ['--config', cfg] });
  try {
    const tok = await g2.setupPostgres({ identity: 'rec', connection: 'app', cluster: pg });
    const rec = await recordOne(async () => {
      const r = ok(await psql(['-Atc', 'select g from generate_series(1, 50) g'], { gateway: g2, tok }));
      assert.equal(r.stdout.trim().split('\n').length, 50);
    }, g2);
    const r = resultOf(rec, statements(rec)[0]);
    assert.equal(r.rowsReturned, 50);
    assert.equal(r.sampleTruncated, true);
    assert.deepEqual(r.sample, [['1'], ['2'], ['3'], ['4'], ['5'], ['6'], ['7']]);

    const rec2 = await recordOne(async () => { ok(await psql(['-Atc', "select repeat('y', 500) from generate_series(1, 20)"], { gateway: g2, tok })); }, g2);
    const r2 = resultOf(rec2, statements(rec2)[0]);
    assert.equal(r2.rowsReturned, 20);
    assert.equal(r2.sampleTruncated, true);
    const cells = (r2.sample as string[][]).flat();
    const bytes = cells.reduce((n, c) => n + c.replace(/…\[\d+ bytes\]$/, '').length, 0);
    assert.ok(bytes <= 2048, `at most sample_bytes of data (${bytes})`);
    assert.ok(cells.length >= 4 && cells.length <= 5, `about 2048/500 rows sampled (${cells.length})`);
  } finally {
    await g2.stop();
  }
});

test('NOTICE is recorded as a notice event between the statement and its result', async () => {
  let out!: RunResult;
  const sql = "DO $$ BEGIN RAISE NOTICE 'hi from plpgsql'; END $$";
  const rec = await recordOne(async () => { out = ok(await psql(['-c', sql])); });
  assert.match(out.stderr, /NOTICE:  hi from plpgsql/);
  const s = stmtByText(rec, sql);
  const notice = rec.events.find((e) => e.type === 'notice');
  assert.ok(notice, 'notice recorded');
  assert.equal(notice.data.message, 'hi from plpgsql');
  assert.equal(notice.data.severity, 'NOTICE');
  assert.equal(notice.data.code, '00000');
  const res = rec.events.find((e) => e.type === 'result' && e.data.ref === s.seq)!;
  assert.ok(s.seq < notice.seq && notice.seq < res.seq, 'ordered: statement, notice, result');
  assert.equal(res.data.tag, 'DO');
});

test('LISTEN/NOTIFY: the notification is recorded with channel, payload and sender pid', async () => {
  let out!: RunResult;
  const rec = await recordOne(async () => {
    out = ok(await psql(['-c', 'LISTEN gh_channel', '-c', "NOTIFY gh_channel, 'payload-1'", '-c', "select pg_notify('gh_channel', 'payload-2')"]));
  });
  assert.match(out.stdout, /Asynchronous notification "gh_channel" with payload "payload-1" received from server process with PID \d+/);
  const notes = rec.events.filter((e) => e.type === 'notification');
  assert.deepEqual(notes.map((n) => [n.data.channel, n.data.payload]), [['gh_channel', 'payload-1'], ['gh_channel', 'payload-2']]);
  const pid = Number(/PID (\d+)/.exec(out.stdout)![1]);
  assert.equal(notes[0].data.pid, pid);
  assert.equal(resultOf(rec, stmtByText(rec, 'LISTEN gh_channel')).tag, 'LISTEN');
  assert.equal(resultOf(rec, stmtByText(rec, "NOTIFY gh_channel, 'payload-1'")).tag, 'NOTIFY');
});

test('SET application_name (and other reported settings) → parameter events', async () => {
  const rec = await recordOne(async () => {
    const r = ok(await psql(['-qAtc', "SET application_name = 'renamed-mid-session'", '-c', "SET TimeZone = 'Asia/Tokyo'", '-c', 'show application_name']));
    assert.equal(r.stdout.trim(), 'renamed-mid-session');
  });
  const params = rec.events.filter((e) => e.type === 'parameter').map((e) => [e.data.name, e.data.value]);
  assert.deepEqual(params, [['application_name', 'renamed-mid-session'], ['TimeZone', 'Asia/Tokyo']]);
  const set = stmtByText(rec, "SET application_name = 'renamed-mid-session'");
  const p = rec.events.find((e) => e.type === 'parameter')!;
  assert.ok(p.seq > set.seq, 'after the SET that caused it');
  assert.equal(resultOf(rec, set).tag, 'SET');
});

test('extended protocol (pgbench -M extended / prepared with a custom script): executions carry SQL text and bound parameters', async () => {
  const script = path.join(tmp, 'params.sql');
  writeFileSync(script, '\\set a 20\n\\set b :a + 22\nselect :a::int + 0 as a, :b::int as b, length(:a::text) as n;\n');
  const benchToken = (await gw.cliOk(['token', 'issue', 'bench', '--ttl', '1h'])).trim().split('\n').pop()!;
  for (const mode of ['extended', 'prepared'] as const) {
    const beforeIds = await sessionIds();
    const r = ok(await pgbench(['-n', '-M', mode, '-c', '1', '-t', '3', '-f', script], 'bench', benchToken));
    assert.match(r.stdout, /number of transactions actually processed: 3\/3/);
    const recs = await newRecordings(beforeIds, 1);
    const execs = recs.flatMap((rec) => rec.events.filter((e) => e.type === 'execute' && /as a, \$2::int as b/.test(String(e.data.text))).map((e) => ({ rec, e })));
    assert.equal(execs.length, 3, `${mode}: one execute per transaction (${execs.length})`);
    for (const { rec, e } of execs) {
      assert.equal(e.data.text, 'select $1::int + 0 as a, $2::int as b, length($3::text) as n;');
      assert.deepEqual(e.data.params, ['20', '42', '20'], `${mode}: bound parameter values`);
      if (mode === 'prepared') assert.ok(typeof e.data.statement === 'string' && e.data.statement.length > 0, 'prepared: the statement name is recorded');
      const res = resultOf(rec, e);
      assert.equal(res.tag, 'SELECT 1');
      assert.deepEqual(res.columns, ['a', 'b', 'n']);
      assert.deepEqual(res.sample, [['20', '42', '2']]);
    }
    assert.equal(recs.filter((x) => x.events.some((e) => e.type === 'query' && /as a/.test(String(e.data.text)))).length, 0, `${mode}: nothing fell back to simple query`);
    if (mode === 'extended') {
      const id = execs[0].rec.session.id;
      const show = await gw.cliOk(['sessions', 'show', id]);
      assert.match(show, /#\d+ execute\s+select \$1::int \+ 0 as a, \$2::int as b, length\(\$3::text\) as n;\s+params=\["20","42","20"\]/);
      assert.match(show, /→ SELECT 1 · 1 row returned/);
      const replay = await gw.cliOk(['sessions', 'replay', id]);
      assert.match(replay, /^app=> select \$1::int \+ 0 as a, \$2::int as b, length\(\$3::text\) as n;\n-- parameters: \["20","42","20"\]$/m);
      assert.match(replay, /^ 20 \| 42 \| 2$/m);
    }
  }
});

test('sessions show prints the statements and their outcomes; sessions replay prints what psql printed', async () => {
  const script = "select name from items where id <= 3 order by id;\ninsert into items values (10, 'ten');\nselect * from still_no_such_table;\n";
  let out!: RunResult;
  const rec = await recordOne(async () => { out = await psql(['-f', '-'], { input: script }); });
  assert.equal(out.code, 0, out.stderr);
  const id = rec.session.id;

  const show = await gw.cliOk(['sessions', 'show', id]);
  assert.match(show, new RegExp(`^session\\s+${id} \\(postgres\\)$`, 'm'));
  assert.match(show, /^identity\s+rec \(agent\)$/m);
  assert.match(show, /^client\s+(::ffff:)?127\.0\.0\.1:\d+\s+application_name=psql$/m);
  assert.match(show, /^ended\s+\S+ — client terminated$/m);
  const lines = show.split('\n');
  const at = (re: RegExp): number => { const i = lines.findIndex((l) => re.test(l)); assert.ok(i >= 0, `show has ${re}:\n${show}`); return i; };
  const a = at(/#\d+ query\s+select name from items where id <= 3 order by id;$/);
  assert.match(lines[a + 1], /→ SELECT 3 · 3 rows returned · [\d.]+ (ms|s)$/);
  const b = at(/#\d+ query\s+insert into items values \(10, 'ten'\);$/);
  assert.match(lines[b + 1], /→ INSERT 0 1 · [\d.]+ (ms|s)$/);
  const c = at(/#\d+ query\s+select \* from still_no_such_table;$/);
  assert.match(lines[c + 1], /→ ERROR 42P01 relation "still_no_such_table" does not exist · [\d.]+ (ms|s)$/);
  assert.ok(a < b && b < c, 'timeline in statement order');

  const replay = await gw.cliOk(['sessions', 'replay', id]);
  // psql's aligned output for the text-only SELECT, exactly (modulo trailing blanks).
  const trimLines = (t: string): string[] => t.split('\n').map((l) => l.trimEnd());
  const psqlTable = trimLines(out.stdout).slice(0, 6); // header, rule, 3 rows, (3 rows)
  assert.deepEqual(psqlTable, [' name', '-------', ' ALPHA', ' BETA', ' gamma', '(3 rows)']);
  const rl = trimLines(replay);
  const q = rl.indexOf('app=> select name from items where id <= 3 order by id;');
  assert.ok(q >= 0, `replay shows the statement as typed at the prompt:\n${replay}`);
  assert.deepEqual(rl.slice(q + 1, q + 7), psqlTable, 'replay shows the rows as psql did');
  const ins = rl.indexOf("app=> insert into items values (10, 'ten');");
  assert.ok(ins > q);
  assert.equal(rl[ins + 1], 'INSERT 0 1', 'command tag as psql prints it');
  const bad = rl.indexOf('app=> select * from still_no_such_table;');
  assert.ok(bad > ins);
  assert.equal(rl[bad + 1], 'ERROR:  relation "still_no_such_table" does not exist');
  assert.match(out.stderr, /ERROR:  relation "still_no_such_table" does not exist/, 'the same words psql showed');
  assert.match(replay, /-- session ended: client terminated/);
});

interface BenchRun { name: string; args: string[] }

test('pgbench: -i through the gateway, then -S simple / extended / prepared / -C all succeed and every transaction is recorded', async () => {
  const benchToken = (await gw.cliOk(['token', 'issue', 'bench', '--ttl', '1h'])).trim().split('\n').pop()!;
  const beforeInit = await sessionIds();
  const init = await pgbench(['-i', '-s', '1', '-q'], 'bench', benchToken);
  assert.equal(init.code, 0, `pgbench -i: ${init.stderr}`);
  assert.match(init.stderr, /done in/);
  assert.equal(await pg.sql('select count(*) from pgbench_accounts', 'app'), '100000', 'pgbench -i loaded the accounts (COPY through the gateway)');
  const initRecs = (await newRecordings(beforeInit, 1)).filter((rec) => statements(rec).some((e) => /^copy pgbench_accounts/i.test(String(e.data.text))));
  assert.equal(initRecs.length, 1, 'the pgbench -i session is recorded');
  const copy = resultOf(initRecs[0], stmtByText(initRecs[0], /^copy pgbench_accounts/i));
  assert.equal(copy.tag, 'COPY 100000');
  assert.equal(copy.rows, 100000);
  assert.ok(typeof copy.copyBytes === 'number' && copy.copyBytes > 100000 * 10, `COPY FROM STDIN bytes counted (${String(copy.copyBytes)})`);

  const runs: BenchRun[] = [
    { name: 'simple', args: ['-S', '-c', '4', '-T', '2'] },
    { name: 'extended', args: ['-S', '-M', 'extended', '-c', '4', '-T', '2'] },
    { name: 'prepared', args: ['-S', '-M', 'prepared', '-c', '4', '-T', '2'] },
    { name: 'connect', args: ['-S', '-C', '-c', '4', '-T', '2'] },
  ];
  for (const b of runs) {
    const beforeIds = await sessionIds();
    const r = await pgbench(b.args, 'bench', benchToken);
    assert.equal(r.code, 0, `pgbench ${b.name}: ${r.stderr}\n${r.stdout}`);
    const tx = Number(/number of transactions actually processed: (\d+)/.exec(r.stdout)?.[1]);
    assert.ok(tx > 0, `${b.name}: transactions processed (${r.stdout})`);
    assert.match(r.stdout, /number of failed transactions: 0 /, `${b.name}: no failures`);

    // pgbench -C: one session per transaction (plus the startup ones); otherwise one per client (+1 for setup).
    const recs = await newRecordings(beforeIds, b.name === 'connect' ? tx : 4);
    assert.ok(recs.length >= (b.name === 'connect' ? tx : 4), `${b.name}: ${recs.length} sessions for ${tx} transactions`);
    let selects = 0;
    let selectOk = 0;
    for (const rec of recs) {
      assert.equal(rec.session.identity.name, 'bench');
      assert.equal(rec.session.identity.kind, 'service');
      assert.ok(rec.session.endReason === 'client terminated', `${b.name}: end reason ${rec.session.endReason}`);
      for (const e of statements(rec)) {
        if (!/^SELECT abalance FROM pgbench_accounts WHERE aid = /i.test(String(e.data.text))) continue;
        selects++;
        const res = rec.events.find((x) => x.type === 'result' && x.data.ref === e.seq);
        if (res?.data.tag === 'SELECT 1' && res.data.rowsReturned === 1) selectOk++;
        if (b.name === 'simple' || b.name === 'connect') assert.equal(e.type, 'query');
        else {
          assert.equal(e.type, 'execute');
          assert.match(String(e.data.text), /aid = \$1/);
          assert.ok(Array.isArray(e.data.params) && e.data.params.length === 1 && /^\d+$/.test(String(e.data.params[0])), 'the account id is recorded');
        }
      }
    }
    assert.ok(selects >= tx, `${b.name}: ${selects} recorded SELECTs for ${tx} transactions`);
    assert.ok(selectOk >= tx, `${b.name}: ${selectOk} recorded SELECT outcomes for ${tx} transactions`);
  }
});

test('the gateway log carries no result data', () => {
  const logs = gw.logs();
  assert.ok(logs.length > 0);
  // Values that only ever travelled in results (never in statement text): md5('1') from the
  // bounded-sample test, the upper-cased names from the UPDATE, the names built by the INSERT … SELECT.
  for (const v of ['c4ca4238a0b923820dcc509a6f75849b', 'ALPHA', 'item4']) {
    assert.ok(!logs.includes(v), `result data ${JSON.stringify(v)} found in the gateway log`);
  }
  assert.ok(!logs.includes(token), 'token in the log');
});
