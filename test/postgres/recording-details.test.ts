// What the recording keeps of less common traffic: fast-path FunctionCall (PQfn, the large-object
// API psql's \lo_import uses) with the function's name and arguments; sessions in another client
// encoding than UTF-8, decoded with it and with the original bytes kept where decoding may not be
// exact; and COPY FROM STDIN sampled like COPY TO and SELECT.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { PgWire, connectAndLogin, decodeDataRow, decodeError, frame, queryMessage, type WireMessage } from '../support/pg-wire.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

const IDENTITY = 'details';
const CONNECTION = 'app';

let pg: PgCluster;
let gw: TestGateway;
let token: string;
let work: string;
let counter = 0;

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-details-'));
  pg = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: IDENTITY, connection: CONNECTION, cluster: pg });
  await pg.sql('create table people (id int, name text); grant all on people to scram_user;', 'app');
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function login(app: string, params: Record<string, string> = {}): Promise<PgWire> {
  const { wire } = await connectAndLogin({
    host: gw.pgHost, port: gw.pgPort, user: IDENTITY, database: CONNECTION, password: token, params: { application_name: app, ...params },
  });
  return wire;
}

async function sessionEvents(app: string): Promise<EventView[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const s = (JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).find((x) => x.applicationName === app);
    if (s?.endReason) return (JSON.parse(await gw.cliOk(['sessions', 'show', s.id, '--json'])) as { events: EventView[] }).events;
    if (Date.now() > deadline) throw new Error(`session ${app} did not end`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const resultOf = (events: EventView[], seq: number) => events.find((e) => e.type === 'result' && e.data.ref === seq)?.data;

function functionCall(oid: number, args: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = Buffer.alloc(4); u32.writeUInt32BE(oid); parts.push(u32);
  const i16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; };
  parts.push(i16(1), i16(0), i16(args.length));
  for (const a of args) { const l = Buffer.alloc(4); l.writeInt32BE(a.length); parts.push(l, a); }
  parts.push(i16(0));
  return frame('F', Buffer.concat(parts));
}

test('FunctionCall is recorded with the function\'s name and its arguments, before it runs', async () => {
  const oid = Number(await pg.sql("select 'pg_catalog.md5(text)'::regprocedure::oid", 'app'));
  const app = `fn-${++counter}`;
  const wire = await login(app);
  wire.send([functionCall(oid, [Buffer.from('hello')])]);
  const got = await wire.readUntilReady();
  const v = got.find((m: WireMessage) => m.type === 'V');
  assert.ok(v, 'FunctionCallResponse: ' + got.map((m) => m.type === 'E' ? decodeError(m.body).message : m.type).join());
  assert.equal(v.body.subarray(4).toString(), '5d41402abc4b2a76b9719d911017c592');
  // A second call of the same function is answered from the cache (no new lookup).
  wire.send([functionCall(oid, [Buffer.from('again')])]);
  await wire.readUntilReady();
  wire.terminate();
  const calls = (await sessionEvents(app)).filter((e) => e.type === 'function_call');
  assert.equal(calls.length, 2);
  assert.equal(calls[0].data.function, 'pg_catalog.md5(text)');
  assert.deepEqual(calls[0].data.args, ['hello']);
  assert.equal(calls[1].data.function, 'pg_catalog.md5(text)');
  assert.deepEqual(calls[1].data.args, ['again']);
});

test('psql \\lo_import (libpq large objects over FunctionCall): every call is named', async () => {
  const file = path.join(work, 'blob.txt');
  writeFileSync(file, 'large object payload');
  const app = `lo-${++counter}`;
  const r = await run('psql', [gw.dsn(CONNECTION, IDENTITY, `application_name=${app}`), '-X', '-c', `\\lo_import ${file}`], {
    env: { ...process.env, PGPASSWORD: token }, timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /lo_import \d+/);
  const calls = (await sessionEvents(app)).filter((e) => e.type === 'function_call');
  assert.ok(calls.length >= 3, JSON.stringify(calls));
  const names = calls.map((e) => String(e.data.function));
  assert.ok(names.includes('pg_catalog.lo_open(oid, integer)'), names.join(', '));
  assert.ok(names.some((n) => n.startsWith('pg_catalog.lowrite(')), names.join(', '));
  const write = calls.find((e) => String(e.data.function).startsWith('pg_catalog.lowrite('))!;
  assert.deepEqual((write.data.args as unknown[])[1], { binary: Buffer.from('large object payload').toString('hex') });
});

test('LATIN1 session: statement text and results are decoded as LATIN1, exactly', async () => {
  const app = `latin1-${++counter}`;
  const wire = await login(app, { client_encoding: 'LATIN1' });
  const sql = Buffer.concat([Buffer.from("select 'caf"), Buffer.from([0xe9]), Buffer.from("' as word")]);
  wire.send([frame('Q', Buffer.concat([sql, Buffer.from([0])]))]);
  const got = await wire.readUntilReady();
  const row = got.find((m) => m.type === 'D')!;
  assert.deepEqual([...decodeDataRow(row.body)[0]!].length, 4);
  wire.terminate();
  const events = await sessionEvents(app);
  const q = events.find((e) => e.type === 'query')!;
  assert.equal(q.data.text, "select 'café' as word");
  assert.equal(q.data.raw, undefined, 'LATIN1 decodes exactly: no raw copy needed');
  assert.deepEqual(resultOf(events, q.seq)?.sample, [['café']]);
});

test('SJIS session: a trail byte that is "\\\\" does not change the recorded SQL, and the bytes are kept', async () => {
  const app = `sjis-${++counter}`;
  const wire = await login(app, { client_encoding: 'SJIS' });
  // ソ in Shift-JIS is 0x83 0x5C: its second byte is a backslash in ASCII.
  const so = Buffer.from([0x83, 0x5c]);
  const sql = Buffer.concat([Buffer.from("select '"), so, Buffer.from("' as kana")]);
  wire.send([frame('Q', Buffer.concat([sql, Buffer.from([0])]))]);
  const got = await wire.readUntilReady();
  assert.equal(got.filter((m) => m.type === 'E').length, 0, got.filter((m) => m.type === 'E').map((m) => decodeError(m.body).message).join());
  wire.terminate();
  const events = await sessionEvents(app);
  const q = events.find((e) => e.type === 'query')!;
  assert.equal(q.data.text, "select 'ソ' as kana");
  assert.equal(q.data.encoding, 'SJIS');
  assert.deepEqual(Buffer.from(String(q.data.raw), 'base64'), sql, 'the original bytes are in the record');
  assert.deepEqual(resultOf(events, q.seq)?.sample, [['ソ']]);
});

test('SET client_encoding mid-session: later statements are decoded with the new encoding', async () => {
  const app = `switch-${++counter}`;
  const wire = await login(app);
  wire.send([queryMessage("set client_encoding = 'LATIN1'")]);
  await wire.readUntilReady();
  const sql = Buffer.concat([Buffer.from("select 'na"), Buffer.from([0xef]), Buffer.from("ve'")]);
  wire.send([frame('Q', Buffer.concat([sql, Buffer.from([0])]))]);
  await wire.readUntilReady();
  wire.terminate();
  const events = await sessionEvents(app);
  const texts = events.filter((e) => e.type === 'query').map((e) => e.data.text);
  assert.deepEqual(texts, ["set client_encoding = 'LATIN1'", "select 'naïve'"]);
});

test('invalid UTF-8 in a UTF-8 session is kept as bytes beside the text', async () => {
  const app = `badutf8-${++counter}`;
  const wire = await login(app);
  const sql = Buffer.concat([Buffer.from("select '"), Buffer.from([0xff, 0xfe]), Buffer.from("'")]);
  wire.send([frame('Q', Buffer.concat([sql, Buffer.from([0])]))]);
  const got = await wire.readUntilReady();
  assert.equal(decodeError(got.find((m) => m.type === 'E')!.body).code, '22021', 'PostgreSQL rejects it');
  wire.terminate();
  const q = (await sessionEvents(app)).find((e) => e.type === 'query')!;
  assert.deepEqual(Buffer.from(String(q.data.raw), 'base64'), sql);
});

test('COPY FROM STDIN is sampled like COPY TO and SELECT (bounded)', async () => {
  const app = `copyin-${++counter}`;
  const rows = Array.from({ length: 200 }, (_, i) => `${i}\tperson-${i}`).join('\n') + '\n';
  const r = await run('psql', [gw.dsn(CONNECTION, IDENTITY, `application_name=${app}`), '-X', '-c', 'copy people from stdin'], {
    env: { ...process.env, PGPASSWORD: token }, input: rows, timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, r.stderr);
  const events = await sessionEvents(app);
  const q = events.find((e) => e.type === 'query')!;
  const out = resultOf(events, q.seq)!;
  assert.equal(out.tag, 'COPY 200');
  const sample = out.sample as string[][];
  assert.ok(sample.length > 0, 'COPY data is sampled');
  assert.match(sample[0][0], /^0\tperson-0\n1\tperson-1/);
  assert.equal(out.copyBytes, Buffer.byteLength(rows));
});

test('a startup parameter the target rejects reaches the client with the target\'s own SQLSTATE (not 08006)', async () => {
  const app = `badguc-${++counter}`;
  const r = await run('psql', [gw.dsn(CONNECTION, IDENTITY, `application_name=${app} options='-c no_such_guc=1'`), '-X', '-c', 'select 1'], {
    env: { ...process.env, PGPASSWORD: token }, timeoutMs: 30_000,
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /unrecognized configuration parameter "no_such_guc"/, r.stderr);
  const wire = await PgWire.connect({ host: gw.pgHost, port: gw.pgPort });
  const err = await wire.startup({ user: IDENTITY, database: CONNECTION, application_name: app, options: '-c work_mem=-5' }, token).then(
    () => null, (e: Error & { fields?: { code: string } }) => e);
  assert.equal(err?.fields?.code, '22023', String(err));
});
