// The conversation shapes real drivers produce, end to end through the gateway: extended-protocol
// pipelines with an error in the middle, COPY in both directions, clients that vanish mid-COPY
// and mid-result, cancel (psql's Ctrl-C and a forged key), a multi-gigabyte result under
// backpressure, asynchronous messages (NOTICE, NOTIFY, ParameterStatus), and the state reset of
// pooled upstream backends. Each test checks what the client sees and what the recording holds.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import {
  PgWire, bindMessage, connectAndLogin, copyDataMessage, decodeCommandComplete, decodeDataRow, decodeError,
  decodeNotification, decodeParameterStatus, describeMessage, describeMessages, executeMessage, parseMessage,
  queryMessage, sendCancel, summarize, syncMessage, frame, type StartupResult,
} from '../support/pg-wire.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

const IDENTITY = 'flow';
const CONNECTION = 'app';

let pg: PgCluster;
let gw: TestGateway;
let token: string;
let appCounter = 0;

function appName(label: string): string {
  return `flow-${++appCounter}-${label}`;
}

function clientEnv(password: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '10' };
}

function psql(app: string, args: string[], opts: { input?: string; identity?: string; password?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run('psql', [gw.dsn(CONNECTION, opts.identity ?? IDENTITY, `application_name=${app}`), '-X', '-v', 'ON_ERROR_STOP=1', ...args], {
    env: clientEnv(opts.password ?? token), input: opts.input, timeoutMs: opts.timeoutMs ?? 30_000,
  });
}

async function login(app: string, opts: { tls?: boolean } = {}): Promise<{ wire: PgWire; startup: StartupResult }> {
  return connectAndLogin({
    host: gw.pgHost, port: gw.pgPort, tls: opts.tls, user: IDENTITY, database: CONNECTION, password: token,
    params: { application_name: app },
  });
}

async function listSessions(): Promise<SessionView[]> {
  return JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--limit', '10000'])) as SessionView[];
}

async function sessionOf(app: string, opts: { ended: boolean; timeoutMs?: number }): Promise<SessionView> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let last: SessionView | undefined;
  for (;;) {
    last = (await listSessions()).find((s) => s.applicationName === app);
    if (last && (!opts.ended || last.endReason)) return last;
    if (Date.now() > deadline) throw new Error(`session of ${app} not ${opts.ended ? 'ended' : 'recorded'} in time: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function eventsOf(id: string): Promise<EventView[]> {
  return (JSON.parse(await gw.cliOk(['sessions', 'show', id, '--json'])) as { events: EventView[] }).events;
}

function resultOf(events: EventView[], seq: number): Record<string, unknown> {
  const r = events.find((e) => e.type === 'result' && e.data.ref === seq);
  assert.ok(r, `no result recorded for event #${seq}: ${JSON.stringify(events.map((e) => [e.seq, e.type]))}`);
  return r.data;
}

function statementEvents(events: EventView[]): EventView[] {
  return events.filter((e) => e.type === 'query' || e.type === 'execute');
}

/** The backend running a statement with exactly this text, once it is active. */
async function activeBackend(text: string, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  const literal = `'${text.replace(/'/g, "''")}'`;
  for (;;) {
    const out = await pg.sql(`select pid from pg_stat_activity where query = ${literal} and state = 'active' and pid <> pg_backend_pid()`);
    if (out !== '') return Number(out.split('\n')[0]);
    if (Date.now() > deadline) throw new Error(`no active backend runs ${text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitBackendGone(pid: number, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await pg.sql(`select count(*) from pg_stat_activity where pid = ${pid}`)) === '0') return;
    if (Date.now() > deadline) throw new Error(`upstream backend ${pid} still connected ${timeoutMs} ms after its client vanished`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until the gateway has finished with a session (its upstream reset and pooled, or closed). */
async function waitSessionLogged(id: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const ended = new RegExp(`"session":"${id}"[^\\n]*"msg":"postgres session ended"`);
  while (!ended.test(gw.logs())) {
    if (Date.now() > deadline) throw new Error(`the gateway did not log the end of session ${id}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function gatewayRssKb(): number {
  const status = readFileSync(`/proc/${gw.process.pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  assert.ok(m, 'VmRSS in /proc/PID/status');
  return Number(m[1]);
}

function assertGatewayUp(): void {
  assert.equal(gw.process.exitCode, null, 'the gateway process exited');
  assert.equal(gw.process.signalCode, null, 'the gateway process was killed');
}

before(async () => {
  pg = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: IDENTITY, connection: CONNECTION, cluster: pg });
  await pg.sql([
    'create table copy_in (id int, label text);',
    'create table copy_vanish (id int, label text);',
    'create table reuse_probe (id int);',
    'grant all on copy_in, copy_vanish, reuse_probe to scram_user;',
  ].join('\n'), 'app');
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
});

test('pipelined extended protocol: three executes and one Sync, the middle one fails; a second pipeline follows unread', async () => {
  const app = appName('pipeline');
  const { wire } = await login(app);
  wire.send([
    parseMessage('', 'select $1::int + 1 as n'), bindMessage('', '', ['41']), describeMessage('P', ''), executeMessage(),
    parseMessage('div', 'select 10 / g as q from unnest(array[5, $1::int]) g'), bindMessage('p2', 'div', ['0']), describeMessage('P', 'p2'), executeMessage('p2'),
    parseMessage('', 'select upper($1) as u'), bindMessage('', '', ['never runs']), describeMessage('P', ''), executeMessage(),
    syncMessage(),
    // Sent before reading anything: the error above must not leak into this pipeline.
    parseMessage('', 'select $1::text || $2::text as c'), bindMessage('', '', ['after', ' error']), executeMessage(),
    syncMessage(),
  ]);
  const first = await wire.readUntilReady();
  const second = await wire.readUntilReady();
  // Exactly what PostgreSQL sends: the second statement returns a row, then fails at run time;
  // the error ends the first pipeline and everything up to its Sync is skipped.
  assert.deepEqual(first.map((m) => m.type), ['1', '2', 'T', 'D', 'C', '1', '2', 'T', 'D', 'E', 'Z'], describeMessages(first));
  assert.deepEqual(decodeDataRow(first[3].body), ['42']);
  assert.equal(decodeCommandComplete(first[4].body), 'SELECT 1');
  assert.deepEqual(decodeDataRow(first[8].body), ['2']);
  const err = decodeError(first[9].body);
  assert.equal(err.code, '22012');
  assert.equal(err.severity, 'ERROR');
  assert.equal(String.fromCharCode(first[10].body[0]), 'I');
  assert.deepEqual(second.map((m) => m.type), ['1', '2', 'D', 'C', 'Z'], describeMessages(second));
  assert.deepEqual(decodeDataRow(second[2].body), ['after error']);
  wire.terminate();

  const s = await sessionOf(app, { ended: true });
  assert.equal(s.endReason, 'client terminated');
  const events = await eventsOf(s.id);
  const execs = events.filter((e) => e.type === 'execute');
  assert.deepEqual(execs.map((e) => e.data.text), ['select $1::int + 1 as n', 'select 10 / g as q from unnest(array[5, $1::int]) g', 'select upper($1) as u', 'select $1::text || $2::text as c']);
  assert.deepEqual(execs.map((e) => e.data.params), [['41'], ['0'], ['never runs'], ['after', ' error']]);
  assert.equal(execs[1].data.statement, 'div');
  assert.equal(execs[1].data.portal, 'p2');
  const r1 = resultOf(events, execs[0].seq);
  assert.equal(r1.tag, 'SELECT 1');
  assert.equal(r1.rows, 1);
  assert.deepEqual(r1.columns, ['n']);
  assert.deepEqual(r1.sample, [['42']]);
  const r2 = resultOf(events, execs[1].seq);
  assert.equal((r2.error as { code: string }).code, '22012');
  assert.match(String((r2.error as { message: string }).message), /division by zero/);
  assert.equal(r2.tag, undefined);
  assert.equal(r2.rowsReturned, 1, 'the row sent before the error is counted');
  assert.deepEqual(r2.sample, [['2']]);
  const r3 = resultOf(events, execs[2].seq);
  assert.equal(r3.skipped, true, `the statement after the error is marked skipped: ${JSON.stringify(r3)}`);
  assert.equal(r3.tag, undefined);
  assert.equal(r3.error, undefined);
  const r4 = resultOf(events, execs[3].seq);
  assert.equal(r4.tag, 'SELECT 1');
  assert.equal(r4.skipped, undefined);
  assert.deepEqual(r4.sample, [['after error']]);
  // Each statement's record precedes its outcome.
  for (const e of execs) assert.ok(events.findIndex((x) => x.type === 'result' && x.data.ref === e.seq) > events.indexOf(e));
});

test('COPY FROM STDIN with psql: the rows arrive, the recording has the COPY with its row count and bytes', async () => {
  const app = appName('copy-in');
  const lines = Array.from({ length: 5000 }, (_, i) => `${i + 1},"label ${i + 1}"`).join('\n') + '\n';
  const r = await psql(app, ['-c', 'COPY copy_in (id, label) FROM STDIN (FORMAT csv)'], { input: lines });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'COPY 5000');
  assert.equal(await pg.sql('select count(*), sum(id), max(label) from copy_in', 'app'), '5000|12502500|label 999');

  const s = await sessionOf(app, { ended: true });
  const events = await eventsOf(s.id);
  const q = events.find((e) => e.type === 'query' && String(e.data.text).startsWith('COPY copy_in'));
  assert.ok(q, 'the COPY statement is recorded');
  const res = resultOf(events, q.seq);
  assert.equal(res.tag, 'COPY 5000');
  assert.equal(res.rows, 5000);
  assert.equal(res.copyBytes, Buffer.byteLength(lines), 'copyBytes counts the CopyData the client sent');
  assert.equal(res.error, undefined);
  assert.equal(res.incomplete, undefined);
  assert.equal(s.endReason, 'client terminated');
});

test('COPY TO STDOUT with psql: the client gets every row, the recording has the row count, the bytes and a bounded sample', async () => {
  const app = appName('copy-out');
  const sql = "COPY (select g, md5(g::text) from generate_series(1, 20000) g) TO STDOUT";
  const r = await psql(app, ['-c', sql]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 20000);
  assert.equal(lines[0], '1\tc4ca4238a0b923820dcc509a6f75849b');

  const s = await sessionOf(app, { ended: true });
  const events = await eventsOf(s.id);
  const q = events.find((e) => e.type === 'query' && e.data.text === sql);
  assert.ok(q);
  const res = resultOf(events, q.seq);
  assert.equal(res.tag, 'COPY 20000');
  assert.equal(res.rows, 20000);
  assert.equal(res.copyBytes, Buffer.byteLength(r.stdout), 'copyBytes counts the CopyData sent to the client');
  const sample = res.sample as string[][];
  assert.ok(Array.isArray(sample) && sample.length > 0 && sample.length <= 100, `bounded sample: ${sample?.length}`);
  assert.equal(sample[0][0], '1\tc4ca4238a0b923820dcc509a6f75849b\n');
  assert.ok(JSON.stringify(sample).length <= 70 * 1024);
  assert.equal(res.sampleTruncated, true);
});

test('COPY FROM STDIN with a bad row (psql) and with CopyFail (raw client): the client gets the error, nothing is committed, the recording has it', async () => {
  const app = appName('copy-bad-row');
  const input = '1,ok\n2,ok\nnot-a-number,bad\n4,ok\n';
  const r = await psql(app, ['-c', 'COPY copy_in (id, label) FROM STDIN (FORMAT csv)'], { input });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /invalid input syntax for type integer/);
  assert.equal(await pg.sql("select count(*) from copy_in where label = 'ok'", 'app'), '0');
  const events = await eventsOf((await sessionOf(app, { ended: true })).id);
  const q = events.find((e) => e.type === 'query' && String(e.data.text).startsWith('COPY copy_in'));
  assert.ok(q);
  const res = resultOf(events, q.seq);
  assert.equal((res.error as { code: string }).code, '22P02', JSON.stringify(res));
  assert.equal(res.tag, undefined);

  const app2 = appName('copy-fail');
  const { wire } = await login(app2);
  wire.send(queryMessage("COPY copy_in (id, label) FROM STDIN (FORMAT csv)"));
  assert.equal((await wire.next()).type, 'G');
  wire.send([copyDataMessage('900010,never\n900011,never\n'), frame('f', Buffer.from('client gave up\0'))]);
  const out = summarize(await wire.readUntilReady());
  assert.equal(out.errors[0]?.code, '57014', describeMessages(out.messages));
  assert.match(out.errors[0].message, /client gave up/);
  assert.deepEqual((await wire.query('select count(*) from copy_in where id in (900010, 900011)')).rows, [['0']]);
  wire.terminate();
  const events2 = await eventsOf((await sessionOf(app2, { ended: true })).id);
  const [copy, count] = statementEvents(events2);
  const res2 = resultOf(events2, copy.seq);
  assert.equal((res2.error as { code: string }).code, '57014');
  assert.equal(res2.copyBytes, Buffer.byteLength('900010,never\n900011,never\n'));
  assert.equal(resultOf(events2, count.seq).tag, 'SELECT 1', 'the session goes on, correctly attributed, after the failed COPY');
});

test('CopyData frames larger than the gateway buffers are streamed through: the COPY completes and copyBytes is exact', async () => {
  const app = appName('copy-big-frames');
  const { wire } = await login(app);
  wire.send(queryMessage('COPY copy_in (id, label) FROM STDIN'));
  assert.equal((await wire.next()).type, 'G');
  const filler = 'z'.repeat(1000);
  let id = 100_000;
  let sent = 0;
  for (const rows of [4000, 9000, 3]) {
    // One CopyData message of `rows` lines (4 MB, 9 MB, tiny), written in pieces so that the
    // gateway sees it arrive over many reads.
    const payload = Buffer.from(Array.from({ length: rows }, () => `${id++}\t${filler}\n`).join(''));
    const msg = copyDataMessage(payload);
    sent += payload.length;
    for (let off = 0; off < msg.length; off += 1_000_003) await wire.sendAndFlush(msg.subarray(off, off + 1_000_003));
  }
  wire.send(frame('c'));
  const done = summarize(await wire.readUntilReady(20_000));
  assert.deepEqual(done.errors, [], describeMessages(done.messages));
  assert.deepEqual(done.tags, ['COPY 13003']);
  assert.deepEqual((await wire.query("select count(*), min(length(label)) from copy_in where id >= 100000")).rows, [['13003', '1000']]);
  wire.terminate();
  const events = await eventsOf((await sessionOf(app, { ended: true })).id);
  const [copy, check] = statementEvents(events);
  const res = resultOf(events, copy.seq);
  assert.equal(res.tag, 'COPY 13003');
  assert.equal(res.copyBytes, sent);
  assert.deepEqual(resultOf(events, check.seq).sample, [['13003', '1000']]);
});

test('extended-protocol COPY FROM STDIN as libpq sends it (Sync after Execute and after CopyDone): later statements keep their own outcomes', async () => {
  // libpq's PQexecParams sends Parse/Bind/Describe/Execute/Sync at once; the server is in COPY IN
  // mode when that Sync arrives and ignores it (copyfromparse.c), and PQputCopyEnd sends CopyDone
  // followed by another Sync. One ReadyForQuery answers both.
  const app = appName('copy-extended');
  const { wire } = await login(app);
  wire.send([parseMessage('', 'COPY copy_in (id, label) FROM STDIN'), bindMessage('', '', []), describeMessage('P', ''), executeMessage(), syncMessage()]);
  const head = await wire.readUntil((m) => m.type === 'G');
  assert.deepEqual(head.map((m) => m.type), ['1', '2', 'n', 'G'], describeMessages(head));
  wire.send([copyDataMessage('200001\textended\n200002\textended\n'), frame('c'), syncMessage()]);
  const end = await wire.readUntilReady();
  assert.deepEqual(end.map((m) => m.type), ['C', 'Z'], describeMessages(end));
  assert.equal(decodeCommandComplete(end[0].body), 'COPY 2');
  const first = await wire.query("select 'first after copy' as a");
  assert.deepEqual(first.rows, [['first after copy']]);
  const second = await wire.query("select 'second after copy' as b");
  assert.deepEqual(second.rows, [['second after copy']]);
  wire.terminate();

  const s = await sessionOf(app, { ended: true });
  const events = await eventsOf(s.id);
  const [copy, q1, q2] = statementEvents(events);
  assert.equal(resultOf(events, copy.seq).tag, 'COPY 2');
  const r1 = resultOf(events, q1.seq);
  const r2 = resultOf(events, q2.seq);
  assert.deepEqual(r1.sample, [['first after copy']], `outcome recorded for ${String(q1.data.text)}: ${JSON.stringify(r1)}`);
  assert.equal(r1.incomplete, undefined);
  assert.deepEqual(r2.sample, [['second after copy']], `outcome recorded for ${String(q2.data.text)}: ${JSON.stringify(r2)}`);
  assert.equal(r2.incomplete, undefined, `a statement that completed is recorded as incomplete: ${JSON.stringify(r2)}`);
});

test('Execute with a row limit: PortalSuspended, then the rest; each execute recorded with its own rows', async () => {
  const app = appName('portal-suspended');
  const { wire } = await login(app);
  wire.send([parseMessage('', 'select g from generate_series(1, 5) g'), bindMessage('cur', '', []), executeMessage('cur', 2), executeMessage('cur', 0), syncMessage()]);
  const msgs = await wire.readUntilReady();
  assert.deepEqual(msgs.map((m) => m.type), ['1', '2', 'D', 'D', 's', 'D', 'D', 'D', 'C', 'Z'], describeMessages(msgs));
  wire.terminate();
  const events = await eventsOf((await sessionOf(app, { ended: true })).id);
  const [e1, e2] = events.filter((e) => e.type === 'execute');
  assert.equal(e1.data.maxRows, 2);
  assert.equal(e1.data.portal, 'cur');
  const r1 = resultOf(events, e1.seq);
  assert.equal(r1.suspended, true);
  assert.deepEqual(r1.sample, [['1'], ['2']]);
  const r2 = resultOf(events, e2.seq);
  assert.equal(r2.tag, 'SELECT 3');
  assert.deepEqual(r2.sample, [['3'], ['4'], ['5']]);
});

test('a client that vanishes mid-COPY FROM STDIN: no rows are committed, the COPY is recorded as incomplete', async () => {
  const app = appName('copy-vanish');
  const { wire } = await login(app);
  const text = 'COPY copy_vanish (id, label) FROM STDIN';
  wire.send(queryMessage(text));
  const g = await wire.next();
  assert.equal(g.type, 'G', 'CopyInResponse');
  let sent = 0;
  for (let i = 1; i <= 2000; i++) {
    const row = `${i}\tpartial row ${i}\n`;
    sent += Buffer.byteLength(row);
    wire.send(copyDataMessage(row));
  }
  await wire.sendAndFlush(copyDataMessage(''));
  const pid = await activeBackend(text);
  await new Promise((r) => setTimeout(r, 300)); // let the rows reach the backend
  wire.destroy();

  await waitBackendGone(pid);
  assert.equal(await pg.sql('select count(*) from copy_vanish', 'app'), '0', 'an interrupted COPY commits nothing');
  assertGatewayUp();

  const s = await sessionOf(app, { ended: true });
  assert.equal(s.endReason, 'client disconnected');
  const events = await eventsOf(s.id);
  const q = events.find((e) => e.type === 'query' && e.data.text === text);
  assert.ok(q, 'the COPY statement is recorded');
  const res = resultOf(events, q.seq);
  assert.equal(res.incomplete, 'client disconnected', `the COPY outcome is marked incomplete: ${JSON.stringify(res)}`);
  assert.equal(res.copyBytes, sent, 'the bytes the client sent before vanishing');
  assert.equal(res.tag, undefined);
  assert.equal(events[events.length - 1].type, 'session.end');

  // The gateway serves the next client normally.
  const next = await login(appName('after-copy-vanish'));
  assert.deepEqual((await next.wire.query('select count(*) from copy_vanish')).rows, [['0']]);
  next.wire.terminate();
});

test('a client that vanishes mid-result: the upstream backend goes away, the session ends "client disconnected"', async () => {
  const app = appName('result-vanish');
  const { wire } = await login(app);
  const text = "select g, repeat('y', 500) as filler from (select generate_series(1, 50000000) as g) s";
  wire.send(queryMessage(text));
  let rows = 0;
  await wire.consume((m) => {
    if (m.type === 'E') throw new Error(`unexpected error: ${decodeError(m.body).message}`);
    if (m.type === 'D') rows++;
    return rows >= 1000;
  });
  const pid = await activeBackend(text);
  wire.destroy();
  const t0 = Date.now();
  await waitBackendGone(pid);
  assert.ok(Date.now() - t0 < 5_000);
  assertGatewayUp();

  const s = await sessionOf(app, { ended: true });
  assert.equal(s.endReason, 'client disconnected');
  const events = await eventsOf(s.id);
  const q = events.find((e) => e.type === 'query' && e.data.text === text);
  assert.ok(q);
  const res = resultOf(events, q.seq);
  assert.equal(res.incomplete, 'client disconnected', JSON.stringify(res));
  assert.ok(Number(res.rowsReturned) >= rows, `rowsReturned ${String(res.rowsReturned)} covers the ${rows} rows the client read`);
  assert.equal(Number((events[0].data.upstream as { pid: number }).pid), pid, 'the recorded upstream pid is the backend that ran it');

  const next = await login(appName('after-result-vanish'));
  assert.deepEqual((await next.wire.query('select 1')).rows, [['1']]);
  next.wire.terminate();
});

test('Ctrl-C in psql cancels the running statement on its backend; the recording has the cancel and 57014', async () => {
  const app = appName('cancel-psql');
  const sql = 'select pg_sleep(30)';
  const child = spawn('psql', [gw.dsn(CONNECTION, IDENTITY, `application_name=${app}`), '-X', '-c', sql], {
    env: clientEnv(token), stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const started = Date.now();
  try {
    await activeBackend(sql);
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGINT');
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 15_000))]);
    assert.notEqual(code, 'timeout', 'psql did not finish after Ctrl-C');
    assert.equal(code, 1, `psql exit code; stdout=${stdout} stderr=${stderr}`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
  const elapsed = Date.now() - started;
  assert.match(stderr, /canceling statement due to user request/);
  assert.ok(elapsed < 12_000, `the statement ended after ${elapsed} ms, not 30 s`);

  const s = await sessionOf(app, { ended: true });
  const events = await eventsOf(s.id);
  const q = events.find((e) => e.type === 'query' && e.data.text === sql);
  assert.ok(q);
  const cancel = events.find((e) => e.type === 'cancel');
  assert.ok(cancel, `a cancel event is recorded: ${JSON.stringify(events.map((e) => e.type))}`);
  assert.ok(cancel.seq > q.seq, 'the cancel comes after the statement it cancelled');
  const res = resultOf(events, q.seq);
  assert.equal((res.error as { code: string } | undefined)?.code, '57014', JSON.stringify(res));
  assert.ok(Number(res.durationUs) < 12_000_000, `recorded duration ${String(res.durationUs)} µs`);
});

test('a CancelRequest with a wrong secret key (or pid) cancels nothing; the right key cancels', async () => {
  const app = appName('cancel-key');
  const { wire, startup } = await login(app);
  assert.ok(startup.pid > 0 && startup.secret.length === 4, 'BackendKeyData from the gateway');
  const cancelOpts = { host: gw.pgHost, port: gw.pgPort };

  const slow = 'select pg_sleep(3) as slept';
  wire.send(queryMessage(slow));
  const backend = await activeBackend(slow);
  assert.notEqual(startup.pid, backend, 'the client is not given the upstream backend pid');
  const wrong = Buffer.from(startup.secret);
  wrong[0] ^= 0xff;
  const forged = await sendCancel(cancelOpts, startup.pid, wrong);
  assert.equal(forged.bytesReceived, 0, 'the protocol gives a canceller no answer');
  await sendCancel(cancelOpts, startup.pid ^ 1, startup.secret);
  // The upstream's own key, which a client could only guess: the gateway must not pass it on either.
  await sendCancel(cancelOpts, backend, startup.secret);
  // The gateway has closed all three cancel connections: it decided while the statement still ran.
  assert.equal(await activeBackend(slow, 100), backend, 'the forged cancels arrived while the statement was running');
  const done = summarize(await wire.readUntilReady(10_000));
  assert.deepEqual(done.errors, [], 'the statement was not cancelled by a wrong key');
  assert.deepEqual(done.tags, ['SELECT 1']);

  const sleeper = 'select pg_sleep(30) as cancelled';
  const t0 = Date.now();
  wire.send(queryMessage(sleeper));
  await activeBackend(sleeper);
  await sendCancel(cancelOpts, startup.pid, startup.secret);
  const cancelled = summarize(await wire.readUntilReady(10_000));
  assert.equal(cancelled.errors[0]?.code, '57014', describeMessages(cancelled.messages));
  assert.ok(Date.now() - t0 < 10_000);

  // libpq 17 sends its CancelRequest over TLS when the session used TLS.
  const sleeper2 = 'select pg_sleep(30) as cancelled_over_tls';
  wire.send(queryMessage(sleeper2));
  await activeBackend(sleeper2);
  const overTls = await sendCancel({ ...cancelOpts, tls: true }, startup.pid, startup.secret);
  assert.equal(overTls.bytesReceived, 0);
  const cancelled2 = summarize(await wire.readUntilReady(10_000));
  assert.equal(cancelled2.errors[0]?.code, '57014', describeMessages(cancelled2.messages));
  assert.deepEqual((await wire.query('select 3')).rows, [['3']], 'the session goes on after a cancel');
  wire.terminate();

  const s = await sessionOf(app, { ended: true });
  const events = await eventsOf(s.id);
  const cancels = events.filter((e) => e.type === 'cancel');
  assert.equal(cancels.length, 2, 'only the cancels with the right key are recorded as forwarded');
  const [q1, q2, q3] = statementEvents(events);
  assert.equal(resultOf(events, q1.seq).tag, 'SELECT 1');
  assert.equal(resultOf(events, q1.seq).error, undefined);
  assert.ok(cancels[0].seq > q2.seq && cancels[0].seq < q3.seq);
  assert.ok(cancels[1].seq > q3.seq);
  assert.equal((resultOf(events, q2.seq).error as { code: string }).code, '57014');
  assert.equal((resultOf(events, q3.seq).error as { code: string }).code, '57014');
});

test('the cancel key of an ended session cannot cancel the next client of the same pooled backend', async () => {
  const app = appName('stale-key');
  const a = await login(app);
  const pidA = (await a.wire.query('select pg_backend_pid()')).rows[0][0];
  a.wire.terminate();
  await waitSessionLogged((await sessionOf(app, { ended: true })).id);

  const b = await login(app);
  assert.deepEqual((await b.wire.query('select pg_backend_pid()')).rows, [[pidA]], 'the second client got the same pooled backend');
  assert.notEqual(b.startup.pid, a.startup.pid, 'a new cancel key for the new client');
  const sql = 'select pg_sleep(3) as stale_key_probe';
  b.wire.send(queryMessage(sql));
  await activeBackend(sql);
  await sendCancel({ host: gw.pgHost, port: gw.pgPort }, a.startup.pid, a.startup.secret);
  await new Promise((r) => setTimeout(r, 200)); // a forwarded cancel would land within this
  assert.equal(await activeBackend(sql, 100), Number(pidA), 'the stale cancel arrived while the statement was running');
  const out = summarize(await b.wire.readUntilReady(10_000));
  assert.deepEqual(out.errors, [], 'the old key cancelled the new client\'s statement');
  assert.deepEqual(out.tags, ['SELECT 1']);
  b.wire.terminate();
  for (const s of (await listSessions()).filter((x) => x.applicationName === app)) {
    const events = await eventsOf(s.id);
    assert.equal(events.filter((e) => e.type === 'cancel').length, 0, `no cancel recorded in ${s.id}`);
  }
});

test('a ~2 GB result read slowly passes with flat gateway memory; the recording counts every row and keeps a bounded sample', async () => {
  // Flat memory means: the gateway holds a bounded window of the result, whatever its size. When
  // the client stops reading, the gateway must stop reading from PostgreSQL (backpressure), so its
  // memory must not grow while the client pauses; and the peak over the whole transfer must stay
  // within a small, size-independent margin over the idle gateway (Node's own buffer churn at
  // this rate is ~80 MB even for a bare stream.pipe() proxy).
  const app = appName('big-result');
  const { wire } = await login(app);
  const sql = "select repeat('x', 1000) from generate_series(1, 2000000)";
  const baseline = gatewayRssKb();
  let maxRss = baseline;
  const sampler = setInterval(() => { maxRss = Math.max(maxRss, gatewayRssKb()); }, 25);
  let rows = 0;
  let badRow = 0;
  let tag = '';
  const pauses: Array<{ atRow: number; rssEarlyKb: number; rssLateKb: number }> = [];
  const started = Date.now();
  try {
    wire.send(queryMessage(sql));
    await wire.consume((m) => {
      switch (m.type) {
        case 'D':
          rows++;
          // Every row is 1000 'x': field count 1, length 1000.
          if (m.body.length !== 1006 || m.body.readInt32BE(2) !== 1000) badRow++;
          if (rows % 400_000 === 0 && rows < 2_000_000) {
            // Stop reading for 1.5 s. Measure the gateway once its buffers toward us are full
            // (after 400 ms) and again at the end of the pause: without backpressure it would keep
            // reading from PostgreSQL (at least 100 MB per second, even on a busy machine) in between.
            const pause = { atRow: rows, rssEarlyKb: 0, rssLateKb: 0 };
            pauses.push(pause);
            wire.pause();
            setTimeout(() => { pause.rssEarlyKb = gatewayRssKb(); }, 400);
            setTimeout(() => { pause.rssLateKb = gatewayRssKb(); wire.resume(); }, 1_500);
          }
          return false;
        case 'C': tag = decodeCommandComplete(m.body); return false;
        case 'E': throw new Error(`error: ${decodeError(m.body).message}`);
        case 'Z': return true;
        default: return false;
      }
    }, 30_000);
  } finally {
    clearInterval(sampler);
  }
  const elapsed = Date.now() - started;
  maxRss = Math.max(maxRss, gatewayRssKb());
  wire.terminate();
  assert.equal(rows, 2_000_000);
  assert.equal(badRow, 0);
  assert.equal(tag, 'SELECT 2000000');
  assert.ok(wire.bytesReceived > 2_000_000_000, `${wire.bytesReceived} bytes received`);
  assert.equal(pauses.length, 4, 'the client paused reading four times');
  assert.ok(pauses.every((p) => p.rssEarlyKb > 0 && p.rssLateKb > 0), 'every pause was measured');
  const mb = (kb: number) => Math.round(kb / 1024);
  const report = `baseline ${mb(baseline)} MB, peak ${mb(maxRss)} MB, pauses ${JSON.stringify(pauses.map((p) => [mb(p.rssEarlyKb), mb(p.rssLateKb)]))} MB, ${elapsed} ms`;
  for (const p of pauses) {
    assert.ok(p.rssLateKb - p.rssEarlyKb < 40 * 1024, `gateway memory grew while the client was not reading (backpressure): ${report}`);
  }
  assert.ok(maxRss - baseline < 160 * 1024, `gateway RSS grew too much during a 2 GB transfer: ${report}`);
  assert.ok(maxRss < 320 * 1024, `gateway RSS too high during a 2 GB transfer: ${report}`);

  const s = await sessionOf(app, { ended: true });
  const events = await eventsOf(s.id);
  const q = events.find((e) => e.type === 'query' && e.data.text === sql);
  assert.ok(q);
  const res = resultOf(events, q.seq);
  assert.equal(res.tag, 'SELECT 2000000');
  assert.equal(res.rowsReturned, 2_000_000);
  assert.equal(res.rows, 2_000_000);
  assert.equal(res.sampleTruncated, true);
  const sample = res.sample as string[][];
  assert.ok(sample.length > 0 && sample.length <= 100, `sample of ${sample.length} rows`);
  assert.equal(sample[0][0], 'x'.repeat(1000));
  assert.ok(JSON.stringify(sample).length <= 66 * 1024, `sample of ${JSON.stringify(sample).length} bytes exceeds 64 KiB`);
});

test('NOTICE and NOTIFY reach the client and the recording', async () => {
  const app = appName('listener');
  const { wire } = await login(app);
  assert.deepEqual((await wire.query('LISTEN gate_chan')).tags, ['LISTEN']);

  // A NOTIFY from another session (psql through the gateway) arrives while the listener is idle.
  const r = await psql(appName('notifier'), ['-c', "NOTIFY gate_chan, 'hello through the gateway'"]);
  assert.equal(r.code, 0, r.stderr);
  const a = await wire.next(5_000);
  assert.equal(a.type, 'A', `NotificationResponse expected, got ${describeMessages([a])}`);
  const n = decodeNotification(a.body);
  assert.equal(n.channel, 'gate_chan');
  assert.equal(n.payload, 'hello through the gateway');

  const notice = await wire.query("do $$ begin raise notice 'notice number %', 42; end $$");
  assert.deepEqual(notice.tags, ['DO']);
  assert.equal(notice.notices.length, 1, describeMessages(notice.messages));
  assert.equal(notice.notices[0].message, 'notice number 42');
  assert.equal(notice.notices[0].code, '00000');
  assert.equal(notice.notices[0].severity, 'NOTICE');
  wire.terminate();

  const events = await eventsOf((await sessionOf(app, { ended: true })).id);
  const recorded = events.find((e) => e.type === 'notification');
  assert.ok(recorded, `notification recorded: ${JSON.stringify(events.map((e) => e.type))}`);
  assert.equal(recorded.data.channel, 'gate_chan');
  assert.equal(recorded.data.payload, 'hello through the gateway');
  const rn = events.find((e) => e.type === 'notice');
  assert.ok(rn, 'notice recorded');
  assert.equal(rn.data.message, 'notice number 42');
});

test('ParameterStatus after SET reaches the client and the recording', async () => {
  const app = appName('param-status');
  const { wire, startup } = await login(app, { tls: true });
  assert.equal(startup.parameters.get('application_name'), app);
  const r = await wire.query("SET application_name = 'renamed-by-set'");
  assert.deepEqual(r.tags, ['SET']);
  const ps = r.messages.filter((m) => m.type === 'S').map((m) => decodeParameterStatus(m.body));
  assert.deepEqual(ps, [{ name: 'application_name', value: 'renamed-by-set' }]);
  const tz = await wire.query("SET TimeZone = 'Asia/Tokyo'");
  assert.deepEqual(tz.messages.filter((m) => m.type === 'S').map((m) => decodeParameterStatus(m.body)), [{ name: 'TimeZone', value: 'Asia/Tokyo' }]);
  wire.terminate();

  const s = await sessionOf(app, { ended: true });
  const events = await eventsOf(s.id);
  const params = events.filter((e) => e.type === 'parameter').map((e) => e.data);
  assert.deepEqual(params, [{ name: 'application_name', value: 'renamed-by-set' }, { name: 'TimeZone', value: 'Asia/Tokyo' }]);

  // The next client on the same pooled backend is told the reset values, not the ones set above.
  await waitSessionLogged(s.id);
  const next = await login(app, { tls: true });
  assert.equal(next.startup.parameters.get('application_name'), app);
  assert.equal(next.startup.parameters.get('TimeZone'), startup.parameters.get('TimeZone'));
  const now = await next.wire.query("select current_setting('TimeZone'), current_setting('application_name')");
  assert.deepEqual(now.rows, [[startup.parameters.get('TimeZone')!, app]]);
  next.wire.terminate();
  const nextStart = (await eventsOf((await listSessions()).filter((x) => x.applicationName === app)[0].id))[0];
  assert.equal((nextStart.data.upstream as { pooled: boolean }).pooled, true, 'the second client got the pooled backend');
});

test('Terminate: the gateway closes the connection as PostgreSQL does, and the session ends "client terminated"', async () => {
  // "On receipt of this message, the backend closes the connection and terminates." A client may
  // send Terminate and wait for the server's close; it must not wait forever.
  const app = appName('terminate-wait');
  const { wire } = await login(app);
  await wire.query('select 1');
  wire.send(frame('X'));
  await wire.readUntilClosed(5_000).catch((err: Error) => {
    wire.destroy();
    throw new Error(`the gateway did not close the connection after Terminate: ${err.message}`);
  });
  assert.equal((await sessionOf(app, { ended: true, timeoutMs: 5_000 })).endReason, 'client terminated');

  // A Query and the Terminate in one packet: the client still gets the whole result, then the close.
  const app2 = appName('query-terminate');
  const second = await login(app2);
  second.wire.send([queryMessage("select 'answered before the close' as last"), frame('X')]);
  const { messages } = await second.wire.readUntilClosed(5_000).catch((err: Error) => {
    second.wire.destroy();
    throw new Error(`the gateway did not close the connection after Query+Terminate: ${err.message}`);
  });
  assert.deepEqual(summarize(messages).rows, [['answered before the close']], describeMessages(messages));
  const s2 = await sessionOf(app2, { ended: true, timeoutMs: 5_000 });
  assert.equal(s2.endReason, 'client terminated');
  const events = await eventsOf(s2.id);
  const q = events.find((e) => e.type === 'query')!;
  assert.equal(resultOf(events, q.seq).tag, 'SELECT 1');
});

test('a pooled backend is reset between clients: no search_path, prepared statement, LISTEN, temp table, lock or open transaction survives', async () => {
  const identity = 'reuser';
  const reuseToken = await gw.setupPostgres({ identity, connection: 'app_reuse', cluster: pg });
  const dsn = (app: string) => gw.dsn('app_reuse', identity, `application_name=${app}`);
  const opts = { env: clientEnv(reuseToken), timeoutMs: 30_000 };

  const first = await run('psql', [dsn('reuse'), '-XAtq', '-v', 'ON_ERROR_STOP=1', '-f', '-'], {
    ...opts,
    input: [
      'SET search_path = leftover_schema, public;',
      "SET statement_timeout = '12345ms';",
      'PREPARE leftover_stmt AS select 1;',
      'LISTEN leftover_chan;',
      'CREATE TEMP TABLE leftover_tmp (x int);',
      'SELECT pg_advisory_lock(4242) IS NOT NULL;',
      'SELECT pg_backend_pid();',
      'BEGIN;',
      'INSERT INTO reuse_probe VALUES (1);',
      '',
    ].join('\n'),
  });
  assert.equal(first.code, 0, first.stderr);
  const firstPid = Number(first.stdout.trim().split('\n').pop());
  assert.ok(firstPid > 0, first.stdout);
  const s1 = (await listSessions()).find((s) => s.connection === 'app_reuse' && s.identity.name === identity);
  assert.ok(s1, 'first session recorded');
  // Wait until the gateway has finished with that backend (reset, then returned to the pool).
  await waitSessionLogged(s1.id);

  const second = await run('psql', [dsn('reuse'), '-XAt', '-F', '|', '-c', [
    'select pg_backend_pid(),',
    "current_setting('search_path'),",
    "current_setting('statement_timeout'),",
    '(select count(*) from pg_prepared_statements),',
    '(select count(*) from pg_listening_channels()),',
    "to_regclass('pg_temp.leftover_tmp') is null,",
    "(select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()),",
    'now() = statement_timestamp()',
  ].join(' ')], opts);
  assert.equal(second.code, 0, second.stderr);
  const [pid, searchPath, timeout, prepared, listening, noTemp, advisory, freshXact] = second.stdout.trim().split('|');
  assert.equal(Number(pid), firstPid, 'the second client got the pooled backend of the first (otherwise nothing is tested)');
  assert.equal(searchPath, '"$user", public', 'search_path is back to its default');
  assert.equal(timeout, '0', 'statement_timeout is back to its default');
  assert.equal(prepared, '0', 'no prepared statements survive');
  assert.equal(listening, '0', 'no LISTEN survives');
  assert.equal(noTemp, 't', 'the temp table is gone');
  assert.equal(advisory, '0', 'session advisory locks are released');
  assert.equal(freshXact, 't', 'the second client does not run inside the first one\'s transaction');
  assert.equal(await pg.sql('select count(*) from reuse_probe', 'app'), '0', 'the open transaction was rolled back');

  const s2 = (await listSessions()).filter((s) => s.connection === 'app_reuse')[0];
  assert.notEqual(s2.id, s1.id);
  const start = (await eventsOf(s2.id)).find((e) => e.type === 'session.start')!;
  assert.equal((start.data.upstream as { pooled: boolean }).pooled, true, 'recorded as a pooled backend');
});
