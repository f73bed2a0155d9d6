// An agent trying to get around PostgreSQL result masking, with real clients (psql, node pg in
// text and binary mode, raw protocol) through the gateway to a throwaway PostgreSQL. Each test
// either checks that an evasion is masked, or that a defect found while attacking stays fixed:
//
// - COPY of an unqualified name under a search path the gateway's own connection does not share
//   (SET search_path = hr; COPY staff TO STDOUT, with a decoy public.staff of harmless column
//   names): the gateway used to name the columns after the decoy and sent hr.staff.salary_note
//   in clear.
// - Errors that echo a value of a masked column (select email::int → invalid input syntax for
//   type integer: "alice@example.com"): fixed in 49cdbab by the masker's owner.
// - ParameterStatus (set_config('application_name', note, false) reported the value in clear)
//   and RowDescription column names (dynamic SQL naming a column after a value) were not read
//   by the detectors.
// - standard_conforming_strings = off: the server reads backslashes in plain literals as
//   escapes, the COPY reader did not, so COPY ran as another statement than the one read (a
//   decoy's column names) or with another delimiter (the row one field).
//
// - Binary results of types that are not text-like (arrays, records, bytea) were not read by the
//   detectors: an asyncpg-style client (binary for every column) got text[] elements, composite
//   fields and bytea holding keys in clear. Such a value holding a secret is now NULL.
//
// - bytea in text format is hex (\x6b6579…): neither the detectors on the client's path nor the
//   store's masking read it, so a bytea holding a key went to the agent and, for every session, to
//   the store in hex. The masker now sends such a value as NULL; the store masks its bytes.
//
// Frame integrity: masked rows of every size (empty, NULL, > 64 KiB, multi-byte), 1,500 columns,
// 300 pipelined queries, through drivers that fail loudly on a bad length.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import {
  bindMessage, closeMessage, connectAndLogin, decodeDataRow, describeMessage, executeMessage, parseMessage, queryMessage, syncMessage, type PgWire, type WireMessage,
} from '../support/pg-wire.ts';

let cluster: PgCluster;
let gw: TestGateway;
let token: string;
let humanToken: string;
let serviceToken: string;
let dir: string;

const AWS_KEY = 'AKIA' + 'Q3EXAMPLEZ7K2M4P';
const GH_TOKEN = 'ghp_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';
const SALARY = 'salary-note-' + '90210-confidential';

const POLICY = `
rules:
  - name: pii-for-agents
    when: { kinds: [agent] }
    action: mask
    mask:
      columns: ["public.users.email", "*.ssn", "hr.staff.salary_note", "public.users.profile"]
      detectors: [aws, github]
      style: redact
  - name: detectors-for-services
    when: { kinds: [service] }
    action: mask
    mask: { detectors: [aws, github] }
`;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-adv-mask-'));
  cluster = await startPgCluster();
  await cluster.sql(`
    CREATE TABLE users (id int primary key, email text, ssn varchar(11), note text, profile jsonb);
    INSERT INTO users VALUES (1, 'alice@example.com', '123-45-6789', 'key ${AWS_KEY} here', '{"a": 1}'),
                             (2, 'bob@example.com', '987-65-4321', 'tok ${GH_TOKEN}', '{"b": 2}');
    CREATE SCHEMA hr;
    CREATE TABLE hr.staff (id int, salary_note text, x text, y text, z text);
    INSERT INTO hr.staff VALUES (1, '${SALARY}', 'a', 'b', 'c');
    CREATE TYPE mood AS ENUM ('ok');
    CREATE TABLE wide (id int, ssn text, note text, j jsonb, b bytea);
    INSERT INTO wide VALUES
      (1, '', '', '{}', ''),
      (2, NULL, NULL, NULL, NULL),
      (3, repeat('s', 70000), repeat('n', 70000) || ' ${AWS_KEY}', jsonb_build_object('k', repeat('z', 70000) || ' ${AWS_KEY}'), decode(repeat('ab', 40000), 'hex')),
      (4, repeat('é', 30000), repeat('日本', 10000) || ' ${AWS_KEY} ' || repeat('語', 10), '{"a": "${AWS_KEY}"}', '\\x00'),
      (5, 'x', '${AWS_KEY}', '"${AWS_KEY}"', NULL);
    GRANT ALL ON users, wide TO scram_user; GRANT USAGE ON SCHEMA hr TO scram_user; GRANT ALL ON hr.staff TO scram_user;
    CREATE TABLE arr (id int, tags text[], blob bytea, pt point);
    INSERT INTO arr SELECT id, ARRAY['x', note], convert_to(note, 'UTF8'), point(1, 2) FROM users;
    INSERT INTO arr VALUES (3, ARRAY['plain', 'tags'], '\\x0102', point(3, 4));
    GRANT ALL ON arr TO scram_user;
    GRANT CREATE ON SCHEMA public TO scram_user;`, 'app');
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'bot', connection: 'app', cluster, kind: 'agent' });
  await gw.cliOk(['identity', 'add', 'alice', '--kind', 'human']);
  humanToken = (await gw.cliOk(['token', 'issue', 'alice', '--ttl', '1h'])).trim().split('\n').pop()!;
  await gw.cliOk(['grant', 'alice', 'app']);
  await gw.cliOk(['identity', 'add', 'svc', '--kind', 'service']);
  serviceToken = (await gw.cliOk(['token', 'issue', 'svc', '--ttl', '1h'])).trim().split('\n').pop()!;
  await gw.cliOk(['grant', 'svc', 'app']);
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  await gw.cliOk(['policy', 'apply', file]);
});

after(async () => {
  await gw?.stop();
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function psql(sql: string): Promise<{ code: number | null; out: string; err: string }> {
  const r = await run('psql', [gw.dsn('app', 'bot', 'application_name=adv-mask'), '-XAtq', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: { ...process.env, PGPASSWORD: token } });
  return { code: r.code, out: r.stdout.replace(/\n$/, ''), err: r.stderr };
}

async function psqlOk(sql: string): Promise<string[]> {
  const r = await psql(sql);
  assert.equal(r.code, 0, r.err);
  return r.out.split('\n');
}

async function wire(app: string): Promise<PgWire> {
  return (await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: token, params: { application_name: app } })).wire;
}

const dataRows = (ms: WireMessage[]) => ms.filter((m) => m.type === 'D').map((m) => decodeDataRow(m.body));
const clear = (s: string) => [AWS_KEY, GH_TOKEN, SALARY, 'alice@example.com', 'bob@example.com', '123-45-6789'].filter((v) => s.includes(v));

test('COPY of an unqualified name: a search path the gateway does not share, and a decoy of the same name on its own, do not unmask a column', async () => {
  // Qualified, the rule holds.
  assert.deepEqual(await psqlOk('copy hr.staff to stdout'), ['1\t[masked:salary_note]\ta\tb\tc']);
  // The agent's session resolves `staff` to hr.staff; the gateway's own connection has the
  // default path and a public.staff with as many columns, none of which a rule names.
  await psqlOk('create table public.staff (a int, b text, c text, d text, e text)');
  try {
    const out = await psqlOk('set search_path = hr; copy staff to stdout');
    assert.deepEqual(clear(out.join('\n')), [], `nothing in clear: ${out.join('\n')}`);
    assert.deepEqual(out, ['[masked:column]\t[masked:column]\t[masked:column]\t[masked:column]\t[masked:column]'], 'a name two schemas hold cannot be told: every column is masked');
  } finally {
    await psqlOk('drop table public.staff');
  }
  // A name only one relation has is still told by column.
  assert.deepEqual(await psqlOk('set search_path = hr; copy staff to stdout'), ['1\t[masked:salary_note]\ta\tb\tc']);
});

test('COPY option spellings (legacy syntax, other delimiters and quotes) do not shift the masked field', async () => {
  const cases: Array<[string, string]> = [
    ["copy users (id, email, ssn) to stdout with (delimiter '|')", '1|[masked:email]|[masked:ssn]'],
    ["copy users (id, email, ssn) to stdout delimiter '|'", '1|[masked:email]|[masked:ssn]'],
    ["copy users (id, email, ssn) to stdout with delimiter as ','", '1,[masked:email],[masked:ssn]'],
    ["copy users (id, email, ssn) to stdout with csv delimiter ';'", '1;"[masked:email]";"[masked:ssn]"'],
    ["copy users (id, email, ssn) to stdout (format csv, delimiter ';', quote '''')", "1;'[masked:email]';'[masked:ssn]'"],
    ["copy users (id, email, ssn) to stdout (format text, delimiter E'\\x01')", '1\x01[masked:email]\x01[masked:ssn]'],
    ["copy users (id, email, ssn) to stdout (format csv, force_quote *)", '"1","[masked:email]","[masked:ssn]"'],
    ['COPY "users" ("id", "email", ssn) TO STDOUT', '1\t[masked:email]\t[masked:ssn]'],
    ['/* c */ copy public . users (id, email, ssn) to stdout', '1\t[masked:email]\t[masked:ssn]'],
  ];
  for (const [sql, first] of cases) {
    const out = await psqlOk(sql);
    assert.equal(out[0], first, sql);
    assert.deepEqual(clear(out.join('\n')), [], sql);
  }
});

test('spellings of a column read from the table are masked (collation, casts that keep the column, row fields, TABLE, FOR UPDATE, a binary cursor)', async () => {
  const cases: Array<[string, string[]]> = [
    ['select email collate "C" from users order by id', ['[masked:email]', '[masked:email]']],
    ['select email::varchar(5), email::name, cast(email as char(40)) from users where id = 1', ['[masked:email]|[masked:email]|[masked:email]']],
    ['select (u).email, (u.*).ssn from users u where id = 1', ['[masked:email]|[masked:ssn]']],
    ['select id, email from users where id = 1 for update', ['1|[masked:email]']],
    ['select email from users where id = 1 union select \'x\'', ['[masked:email]', '[masked:email]']],
    ['select id, email, ssn from (table users) t order by id limit 1', ['1|[masked:email]|[masked:ssn]']],
    ['select email::bytea from users where id = 1', ['']],
  ];
  for (const [sql, want] of cases) assert.deepEqual((await psqlOk(sql)).sort(), want.sort(), sql);
  const cursor = await psqlOk('begin; declare c binary cursor for select email, profile from users order by id; fetch all from c; commit');
  assert.deepEqual(cursor.filter((l) => l.includes('masked')), ['[masked:email]|\x01"[masked:profile]"', '[masked:email]|\x01"[masked:profile]"'], 'binary jsonb as psql prints it: the version byte, then a JSON string');
});

test('extended protocol: a statement, portal or cursor name reused for another column order is not read with the old shape', async () => {
  const w = await wire('adv-reuse');
  try {
    // Close, then Parse the same name with the columns swapped, Execute without a Describe.
    w.send([parseMessage('s1', 'select id, email from users order by id'), describeMessage('S', 's1'), syncMessage()]);
    await w.readUntilReady();
    w.send([closeMessage('S', 's1'), parseMessage('s1', 'select email, id from users order by id'), bindMessage('', 's1', []), executeMessage(), syncMessage()]);
    for (const row of dataRows(await w.readUntilReady())) assert.equal(row[0], null, 'not the old shape (id first): unknown, so NULL');
    // DEALLOCATE and PREPARE in SQL.
    w.send([parseMessage('p', 'select id, note from users order by id'), describeMessage('S', 'p'), syncMessage()]);
    await w.readUntilReady();
    await w.queryOk('deallocate p; prepare p as select email, id from users order by id');
    w.send([bindMessage('', 'p', []), executeMessage(), syncMessage()]);
    for (const row of dataRows(await w.readUntilReady())) assert.equal(row[0], null);
    // The unnamed statement parsed again.
    w.send([parseMessage('', 'select id, email from users order by id'), describeMessage('S', ''), syncMessage()]);
    await w.readUntilReady();
    w.send([parseMessage('', 'select email, id from users order by id'), bindMessage('', '', []), executeMessage(), syncMessage()]);
    for (const row of dataRows(await w.readUntilReady())) assert.equal(row[0], null);
    // A cursor closed and declared again under the same name, executed as a portal.
    await w.queryOk('begin');
    await w.queryOk('declare c cursor for select id, note from users order by id');
    w.send([describeMessage('P', 'c'), syncMessage()]);
    await w.readUntilReady();
    await w.queryOk('close c; declare c cursor for select email, id from users order by id');
    w.send([executeMessage('c', 0), syncMessage()]);
    for (const row of dataRows(await w.readUntilReady())) assert.equal(row[0], null);
    await w.queryOk('commit');
    // A described statement bound for binary results: binary jsonb keeps its version byte.
    w.send([parseMessage('j', 'select profile, note, email from users order by id'), describeMessage('S', 'j'), syncMessage()]);
    await w.readUntilReady();
    w.send([bindMessage('', 'j', [], { resultFormats: [1, 0, 1] }), executeMessage(), syncMessage()]);
    const rows = (await w.readUntilReady()).filter((m) => m.type === 'D');
    assert.equal(rows.length, 2);
    const cells = rows.map((m) => {
      const b = m.body;
      const len = b.readInt32BE(2);
      return b.subarray(6, 6 + len);
    });
    for (const c of cells) assert.equal(c.toString('latin1'), '\x01"[masked:profile]"');
    for (const m of rows) assert.deepEqual(clear(m.body.toString('utf8')), []);
  } finally {
    w.terminate();
  }
});

test('frame integrity: node pg, text and binary, masked rows empty, NULL, over 64 KiB, multi-byte; 1,500 columns; 300 pipelined queries', async () => {
  for (const binary of [false, true]) {
    const client = new pg.Client({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: token, ssl: { rejectUnauthorized: false }, binary } as pg.ClientConfig);
    await client.connect();
    try {
      for (let round = 0; round < 2; round++) {
        const r = await client.query('select id, ssn, note, j, b from wide order by id');
        const rows = r.rows as Array<{ id: number; ssn: string | null; note: string | null; j: unknown; b: Buffer | null }>;
        assert.deepEqual(rows.map((x) => x.ssn), ['[masked:ssn]', null, '[masked:ssn]', '[masked:ssn]', '[masked:ssn]'], `binary ${binary}`);
        assert.equal(rows[0]!.note, '');
        assert.equal(rows[1]!.note, null);
        assert.equal(rows[2]!.note, `${'n'.repeat(70000)} [masked:aws]`);
        assert.equal(rows[3]!.note, `${'日本'.repeat(10000)} [masked:aws] ${'語'.repeat(10)}`);
        assert.equal(rows[4]!.note, '[masked:aws]');
        assert.equal(rows[2]!.b!.length, 40000);
        assert.equal(rows[0]!.b!.length, 0);
        const j = rows.map((x) => (typeof x.j === 'string' ? x.j : JSON.stringify(x.j)));
        assert.ok(j[2]!.endsWith(' [masked:aws]"}'), j[2]!.slice(-40));
        assert.deepEqual(clear(JSON.stringify(rows)), []);
      }
      const cols = Array.from({ length: 1500 }, (_, i) => (i % 3 === 0 ? `ssn as s${i}` : i % 3 === 1 ? `note as n${i}` : `id as i${i}`)).join(', ');
      const r = await client.query(`select ${cols} from wide where id in (1, 2, 5) order by id`);
      assert.equal(r.fields.length, 1500);
      assert.equal(r.rows.length, 3);
      assert.deepEqual(clear(JSON.stringify(r.rows)), []);
      assert.equal((r.rows[2] as Record<string, unknown>).s0, '[masked:ssn]');
      assert.equal((r.rows[2] as Record<string, unknown>).n1, '[masked:aws]');
    } finally {
      await client.end();
    }
  }
  const w = await wire('adv-pipeline');
  try {
    const n = 300;
    w.send(Array.from({ length: n }, (_, i) => queryMessage(i % 2 ? `select id, ssn, note from wide where id = ${i % 6}` : `select ${i} as k, 'x' as y`)));
    let ready = 0;
    const rows: Array<Array<string | null>> = [];
    while (ready < n) {
      const m = await w.next();
      if (m.type === 'Z') ready++;
      else if (m.type === 'D') rows.push(decodeDataRow(m.body));
      else assert.ok('TCnN'.includes(m.type), `unexpected ${m.type}`);
    }
    assert.equal(rows.length, n, 'every answer');
    assert.deepEqual(clear(JSON.stringify(rows)), []);
    assert.equal(rows.filter((r) => r.length === 3 && /^s+$/.test(r[1] ?? '')).length, 0);
  } finally {
    w.terminate();
  }
});

test('errors that echo a value of a masked column do not show it (fixed in 49cdbab)', async () => {
  const w = await wire('adv-error-echo');
  try {
    for (const sql of [
      'select email::int from users', 'select email::date from users', 'select email::uuid from users', 'select email::bool from users',
      'select email::mood from users', 'select email::json from users', 'select email::regclass from users', 'select email::int[] from users',
    ]) {
      const r = await w.query(sql);
      assert.equal(r.errors.length, 1, sql);
      assert.deepEqual(clear(JSON.stringify(r.errors[0])), [], `${sql}: ${JSON.stringify(r.errors[0])}`);
    }
  } finally {
    w.terminate();
  }
});

test('server messages other than rows and notices go through the detectors: ParameterStatus, RowDescription column names', async () => {
  const w = await wire('adv-side-channels');
  try {
    const r = await w.query("select set_config('application_name', substr(note, 5), false) as x from users where id = 1");
    assert.deepEqual(dataRows(r.messages), [['[masked:aws] here']], 'the result cell is masked');
    const reported = r.messages.filter((m) => m.type === 'S').map((m) => m.body.toString('utf8'));
    assert.ok(reported.length > 0, 'the server reported application_name');
    assert.deepEqual(clear(reported.join('\n')), [], `ParameterStatus: ${JSON.stringify(reported)}`);
    await w.queryOk("create or replace function adv_leak_name() returns refcursor language plpgsql as $f$ declare r refcursor := 'lk'; begin open r for execute format('select 1 as %I', (select substr(note, 5, 20) from users where id = 1)); return r; end $f$");
    await w.queryOk('begin');
    await w.queryOk('select adv_leak_name()');
    const f = await w.query('fetch all from lk');
    await w.queryOk('commit');
    const names = f.messages.filter((m) => m.type === 'T').map((m) => m.body.toString('utf8'));
    assert.equal(names.length, 1);
    assert.deepEqual(clear(names.join('\n')), [], `RowDescription: ${JSON.stringify(names)}`);
  } finally {
    w.terminate();
  }
});

test('standard_conforming_strings = off: backslashes the server reads as escapes do not move COPY onto another statement or change its delimiter', async () => {
  await psqlOk('create table public.decoy (a int, b text, c text, d text, e text)');
  try {
    const r = await run('psql', [gw.dsn('app', 'bot', 'application_name=adv-scs'), '-XAtq', '-v', 'ON_ERROR_STOP=1',
      '-c', 'set standard_conforming_strings = off',
      // The server reads one literal up to $$', then COPY hr.staff; a reader with the default
      // setting sees select 'a\', COPY public.decoy (harmless names), and a dollar-quoted literal.
      '-c', "select 'a\\'; copy public.decoy to stdout; select $$'; copy hr.staff to stdout; --$$",
      // A delimiter written with an escape: a tab, a | and a , to the server.
      '-c', "copy hr.staff to stdout (delimiter '\\t')",
      '-c', "copy hr.staff to stdout (delimiter '\\x7c')",
      '-c', "copy hr.staff to stdout (format csv, delimiter '\\x2c')",
    ], { env: { ...process.env, PGPASSWORD: token } });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(clear(r.stdout), [], r.stdout);
    assert.equal(r.stdout.split('\n').filter((l) => l.includes('[masked:')).length, 4, r.stdout);
  } finally {
    await psqlOk('drop table public.decoy');
  }
});

test('binary results: an array, a record or a bytea holding a secret is NULL; one holding none is intact', async () => {
  const w = await wire('adv-binary-opaque');
  try {
    for (const [sql, want] of [
      ['select id, tags from arr order by id', [[true, null], [true, null], [true, 'binary']]],
      ['select id, blob from arr order by id', [[true, null], [true, null], [true, 'binary']]],
      ['select id, row(note, 1) as r from users order by id', [[true, null], [true, null]]],
      ['select id, pt from arr order by id', [[true, 'binary'], [true, 'binary'], [true, 'binary']]],
    ] as const) {
      w.send([parseMessage('', sql), bindMessage('', '', [], { resultFormats: [1] }), describeMessage('P', ''), executeMessage(), syncMessage()]);
      const ms = await w.readUntilReady();
      assert.ok(!ms.some((m) => m.type === 'E'), sql);
      const rows = ms.filter((m) => m.type === 'D');
      assert.deepEqual(clear(rows.map((m) => m.body.toString('latin1')).join('\n')), [], sql);
      const cells = rows.map((m) => {
        const b = m.body;
        const l0 = b.readInt32BE(2);
        const l1 = b.readInt32BE(6 + l0);
        return [l0 === 4, l1 < 0 ? null : 'binary'];
      });
      assert.deepEqual(cells, want, sql);
    }
    // A plain array through node pg in binary mode still parses.
    const client = new pg.Client({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: token, ssl: { rejectUnauthorized: false }, binary: true } as pg.ClientConfig);
    await client.connect();
    try {
      const r = await client.query({ text: 'select id, tags from arr where id <= $1 order by id', values: [3] });
      assert.deepEqual(r.rows.map((x) => x.tags === null ? null : 'set'), [null, null, 'set']);
    } finally {
      await client.end();
    }
  } finally {
    w.terminate();
  }
});

test('bytea in text format (hex): a value holding a secret is NULL for a masked client, and the store never holds it, in hex or not, for any session', async () => {
  assert.deepEqual(await psqlOk('select id, blob from arr order by id'), ['1|', '2|', '3|\\x0102']);
  // A session no mask rule applies to gets the value; its recording holds it masked.
  const r = await run('psql', [gw.dsn('app', 'alice', 'application_name=adv-bytea-human'), '-XAtq', '-c', 'select id, blob from arr order by id'], { env: { ...process.env, PGPASSWORD: humanToken } });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.includes(Buffer.from(`key ${AWS_KEY} here`).toString('hex')), 'a human gets the bytes');
  await new Promise((res) => setTimeout(res, 1500));
  const hexes = [AWS_KEY, GH_TOKEN].map((k) => Buffer.from(k).toString('hex'));
  for (const f of readdirSync(gw.dataDir).filter((n) => n.startsWith('gatehouse.db'))) {
    const bytes = readFileSync(path.join(gw.dataDir, f)).toString('latin1');
    for (const h of hexes) assert.ok(!bytes.includes(h), `${f} holds a key in hex`);
  }
});

test('COPY of a bytea column (text and CSV): a field holding a secret in its bytes is masked, others intact', async () => {
  const hexes = [AWS_KEY, GH_TOKEN].map((k) => Buffer.from(k).toString('hex'));
  const text = await psqlOk('copy arr (id, blob) to stdout');
  assert.deepEqual(text.sort(), ['1\t[masked:aws]', '2\t[masked:github]', '3\t\\\\x0102']);
  const csv = await psqlOk('copy arr (id, blob) to stdout (format csv)');
  assert.deepEqual(csv.sort(), ['1,"[masked:aws]"', '2,"[masked:github]"', '3,\\x0102']);
  for (const h of hexes) assert.ok(!text.concat(csv).join('\n').includes(h));
});

test('the planner statistics (pg_stats) do not show sampled values of analysed columns while column rules apply', async () => {
  await cluster.sql('ANALYZE users;', 'app');
  const rows = await psqlOk("select attname, most_common_vals, histogram_bounds from pg_stats where tablename = 'users' and schemaname = 'public' order by attname");
  assert.ok(rows.some((r) => r.startsWith('email|')), rows.join('\n'));
  assert.deepEqual(clear(rows.join('\n')), [], rows.join('\n'));
  const viaView = await psqlOk("select h from (select histogram_bounds as h, attname from pg_stats where tablename = 'users') s where attname = 'ssn'");
  assert.deepEqual(clear(viaView.join('\n')), [], viaView.join('\n'));
  // Everything else about the statistics is still there.
  assert.deepEqual(await psqlOk("select attname, null_frac from pg_stats where tablename = 'users' and attname = 'id'"), ['id|0']);
});

test('policy test --mask: the sample it is given (a real key, pasted by an operator) is not kept in the data directory', async () => {
  const sample = `the key is AKIA${'R7TESTKEYZ9X2M4Q'}`;
  const out = await gw.cliOk(['policy', 'test', '--connection', 'app', '--identity', 'bot', '--mask', sample]);
  assert.match(out, /^masked +the key is \[masked:aws\]$/m);
  await new Promise((res) => setTimeout(res, 1000));
  for (const f of readdirSync(gw.dataDir).filter((n) => !n.includes('.') || n.startsWith('gatehouse.db') || n.endsWith('.head') || n.endsWith('.log'))) {
    let bytes: string;
    try { bytes = readFileSync(path.join(gw.dataDir, f)).toString('latin1'); } catch { continue; }
    assert.ok(!bytes.includes('R7TESTKEYZ9X2M4Q'), `${f} holds the sample`);
  }
});

test('detectors only, rows never described (Execute without Describe) in binary: a value holding a secret is NULL, not rewritten inside its binary structure', async () => {
  const { wire: w } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'svc', database: 'app', password: serviceToken, params: { application_name: 'adv-undescribed' } });
  try {
    w.send([parseMessage('', 'select id, tags from arr order by id'), bindMessage('', '', [], { resultFormats: [1] }), executeMessage(), syncMessage()]);
    const rows = (await w.readUntilReady()).filter((m) => m.type === 'D');
    assert.equal(rows.length, 3);
    assert.deepEqual(clear(rows.map((m) => m.body.toString('latin1')).join('\n')), []);
    for (const m of rows) {
      // Every value is either NULL or the server's bytes: a binary int4 and a well-formed text[].
      const b = m.body;
      assert.equal(b.readInt32BE(2), 4);
      const len = b.readInt32BE(10);
      if (len < 0) continue;
      const arr = b.subarray(14, 14 + len);
      assert.equal(arr.readInt32BE(0), 1, 'one dimension');
      let pos = 12 + 8 * arr.readInt32BE(0); // ndim, flags, element type, then (size, lower bound) per dimension
      for (let i = 0; i < arr.readInt32BE(12); i++) { const l = arr.readInt32BE(pos); pos += 4 + Math.max(0, l); }
      assert.equal(pos, arr.length, 'element lengths add up to the value');
    }
    // Described, in text: the secret is masked in place as before.
    const t = await w.queryOk('select note from users where id = 1');
    assert.deepEqual(t.rows, [['key [masked:aws] here']]);
  } finally {
    w.terminate();
  }
});

test('binary COPY: a field holding a secret is NULL (detectors read its bytes); the rest intact', async () => {
  const r = await run('psql', [gw.dsn('app', 'bot'), '-XAtq', '-c', 'copy arr (id, tags, blob) to stdout (format binary)'], { env: { ...process.env, PGPASSWORD: token } });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(clear(r.stdout), [], 'no key in the binary COPY');
  const s = spawnSyncCopy();
  assert.deepEqual(s, [[true, null, null], [true, null, null], [true, 'set', 'set']]);
});

function spawnSyncCopy(): Array<[boolean, string | null, string | null]> {
  const r = spawnSync('psql', [gw.dsn('app', 'bot'), '-XAtq', '-c', 'copy arr (id, tags, blob) to stdout (format binary)'], { env: { ...process.env, PGPASSWORD: token }, timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr.toString());
  const out = r.stdout;
  let pos = out.indexOf('PGCOPY\n\xff\r\n\0', 0, 'latin1') + 19;
  const rows: Array<[boolean, string | null, string | null]> = [];
  for (;;) {
    const n = out.readInt16BE(pos);
    pos += 2;
    if (n === -1) break;
    const cells: Array<number> = [];
    for (let i = 0; i < n; i++) {
      const len = out.readInt32BE(pos);
      pos += 4 + Math.max(0, len);
      cells.push(len);
    }
    rows.push([cells[0] === 4, cells[1]! < 0 ? null : 'set', cells[2]! < 0 ? null : 'set']);
  }
  return rows.sort((a, b) => (a[1] === null ? 0 : 1) - (b[1] === null ? 0 : 1));
}
