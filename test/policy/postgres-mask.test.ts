// Mask rules on PostgreSQL results, with real clients and a real server: psql (simple protocol,
// COPY), the pg driver in binary mode (extended protocol), and raw protocol sequences. Each case
// checks what the client sees against the table itself, read directly on the cluster (unchanged).
// A session no mask rule applies to gets the target's bytes unchanged.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { spawnSync } from 'node:child_process';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { endedSessionEvents } from '../support/recordings.ts';
import {
  bindMessage, decodeNotification, connectAndLogin, decodeDataRow, describeMessage, executeMessage, parseMessage, syncMessage, PgWire, type WireMessage,
} from '../support/pg-wire.ts';

let cluster: PgCluster;
let gw: TestGateway;
let agentToken: string;
let humanToken: string;
let dir: string;

// Fake secrets, well-formed for the detectors.
const AWS_KEY = 'AKIA' + 'Q3EXAMPLEZ7K2M4P';
const GH_TOKEN = 'ghp_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';

const POLICY = `
rules:
  - name: no-drops
    sql: { commands: ["DROP *"] }
    action: deny
  - name: pii-for-agents
    when: { kinds: [agent] }
    action: mask
    mask:
      columns: ["public.users.email", "*.ssn", "*.password*", "*.pin"]
      detectors: [aws, github]
      style: redact
  - name: profiles-hashed
    when: { kinds: [agent] }
    action: mask
    mask: { columns: ["users.profile", "users.nick"], style: hash }
`;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-pg-mask-'));
  cluster = await startPgCluster();
  await cluster.sql(`
    CREATE TABLE users (id int primary key, email text, ssn varchar(11), password_hash text, note text, profile jsonb, nick text, pin int, age int);
    INSERT INTO users VALUES
      (1, 'alice@example.com', '123-45-6789', 'bcrypt$abc', 'key ${AWS_KEY} here', '{"a": 1}', 'same', 4321, 30),
      (2, 'bob@example.com', '987-65-4321', 'bcrypt$def', 'token=${GH_TOKEN}', '{"a": 1}', 'same', 1234, 41),
      (3, NULL, NULL, NULL, 'nothing to see', NULL, 'other', NULL, NULL);
    CREATE UNIQUE INDEX users_email ON users (email);
    CREATE FUNCTION all_users() RETURNS SETOF users LANGUAGE sql AS 'select * from users';
    ALTER TABLE users ADD CONSTRAINT age_positive CHECK (age >= 0);
    GRANT ALL ON users TO scram_user;`, 'app');
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

async function psql(token: string, identity: string, sql: string, extra: string[] = []) {
  const r = await run('psql', [gw.dsn('app', identity, 'application_name=psql-mask'), '-XAtq', '-F', '|', '-v', 'ON_ERROR_STOP=1', ...extra, '-c', sql], { env: { ...process.env, PGPASSWORD: token } });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.replace(/\n$/, '').split('\n');
}

const direct = async (sql: string) => (await cluster.sql(sql, 'app')).split('\n');

test('psql as an agent: named columns are masked, detectors mask secrets in other columns, the rest is intact; the table is unchanged', async () => {
  const rows = await psql(agentToken, 'bot', 'select id, email, ssn, password_hash, note, nick, pin, age from users order by id');
  assert.equal(rows[0], `1|[masked:email]|[masked:ssn]|[masked:password_hash]|key [masked:aws] here|${rows[0]!.split('|')[5]}||30`);
  assert.match(rows[0]!.split('|')[5]!, /^\[hash:nick:[0-9a-f]{16}\]$/);
  assert.equal(rows[1]!.split('|')[4], 'token=[masked:github]');
  assert.equal(rows[1]!.split('|')[5], rows[0]!.split('|')[5], 'hash: equal values mask equally');
  assert.notEqual(rows[2]!.split('|')[5], rows[0]!.split('|')[5]);
  assert.equal(rows[1]!.split('|')[6], '', 'a masked integer column is sent as NULL');
  assert.equal(rows[2], `3||||nothing to see|${rows[2]!.split('|')[5]}||`, 'NULLs stay NULL');
  const table = await direct('select id, email, ssn, note, pin from users order by id');
  assert.deepEqual(table.slice(0, 2), [`1|alice@example.com|123-45-6789|key ${AWS_KEY} here|4321`, `2|bob@example.com|987-65-4321|token=${GH_TOKEN}|1234`]);
});

test('an alias does not dodge a rule (columns are named by table OID and attribute number); an expression is named by its output name', async () => {
  const rows = await psql(agentToken, 'bot', 'select email as x, u.ssn as "harmless", lower(email) as email, upper(ssn) as y from users u where id = 1');
  assert.deepEqual(rows, ['[masked:email]|[masked:ssn]|[masked:email]|123-45-6789']);
  // A join and a subquery still name the base column.
  const joined = await psql(agentToken, 'bot', 'select a.email, b.c from users a join (select id, email as c from users) b on a.id = b.id where a.id = 2');
  assert.deepEqual(joined, ['[masked:email]|[masked:email]']);
  // A whole row of the table (or an array of rows) holds the masked columns: it is NULL.
  assert.deepEqual(await psql(agentToken, 'bot', 'select id, u from users u where id = 1'), ['1|']);
  assert.deepEqual(await psql(agentToken, 'bot', 'select array_agg(u), count(*) from users u'), ['|3']);
  // A function returning the table's rows returns expression columns: named by their output names.
  assert.deepEqual(await psql(agentToken, 'bot', 'select id, email from all_users() where id = 2'), ['2|[masked:email]']);
});

test('a human (no mask rule in scope) gets the target\'s bytes unchanged, message for message', async () => {
  const sql = 'select * from users order by id';
  const through = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'alice', database: 'app', password: humanToken, params: { application_name: 'bytes' } });
  const viaGateway = (await through.wire.queryOk(sql)).messages;
  through.wire.terminate();
  const wire = await PgWire.connect({ host: cluster.host, port: cluster.port });
  await wire.startup({ user: 'postgres', database: 'app' });
  const straight = (await wire.queryOk(sql)).messages;
  wire.terminate();
  const bodies = (ms: WireMessage[]) => ms.filter((m) => m.type === 'T' || m.type === 'D' || m.type === 'C').map((m) => `${m.type}:${m.body.toString('hex')}`);
  assert.deepEqual(bodies(viaGateway), bodies(straight));
  assert.ok(bodies(straight).some((b) => b.includes(Buffer.from('alice@example.com').toString('hex'))));
});

test('node pg in binary mode (extended protocol): text-like columns masked in binary, jsonb hashed as a JSON string, other types intact or NULL', async () => {
  const client = new pg.Client({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, ssl: { rejectUnauthorized: false }, binary: true } as pg.ClientConfig);
  await client.connect();
  try {
    const r = await client.query({ text: 'select id, email, ssn, note, profile, pin, age from users where id <= $1 order by id', values: [2] });
    assert.equal(r.rows[0].id, 1);
    assert.equal(r.rows[0].email, '[masked:email]');
    assert.equal(r.rows[0].ssn, '[masked:ssn]');
    assert.equal(r.rows[0].note, 'key [masked:aws] here');
    // pg has no binary parser for jsonb: it hands over the version byte and the JSON text as they came.
    assert.equal(r.rows[0].profile[0], '\x01');
    assert.match(JSON.parse(r.rows[0].profile.slice(1)), /^\[hash:profile:[0-9a-f]{16}\]$/, 'jsonb comes back as a JSON string');
    assert.equal(r.rows[1].profile, r.rows[0].profile);
    assert.equal(r.rows[0].pin, null, 'a masked int in binary is NULL');
    assert.equal(r.rows[0].age, 30);
    // Text format through the same driver (pg's default): the same masks.
    const t = await client.query({ text: 'select email, profile from users where id = 2', binary: false } as pg.QueryConfig);
    assert.equal(t.rows[0].email, '[masked:email]');
    assert.match(t.rows[0].profile, /^\[hash:profile:/);
  } finally {
    await client.end();
  }
});

test('extended protocol: a statement described once and executed later (no RowDescription with the rows) is masked; a portal fetched in pieces too', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'ext-mask' } });
  wire.send([parseMessage('s1', 'select email, id from users order by id'), describeMessage('S', 's1'), syncMessage()]);
  await wire.readUntilReady();
  wire.send([bindMessage('', 's1', []), executeMessage('', 2), executeMessage('', 0), syncMessage()]);
  const rows = (await wire.readUntilReady()).filter((m) => m.type === 'D').map((m) => decodeDataRow(m.body));
  assert.deepEqual(rows, [['[masked:email]', '1'], ['[masked:email]', '2'], [null, '3']]);
  wire.terminate();
});

test('COPY TO STDOUT, text and CSV, is masked by column; COPY (query) masks every column', async () => {
  const text = await psql(agentToken, 'bot', 'copy users (id, email, note, pin) to stdout');
  // COPY carries no types: a masked field takes the style's text whatever its column's type.
  assert.deepEqual(text, ['1\t[masked:email]\tkey [masked:aws] here\t[masked:pin]', '2\t[masked:email]\ttoken=[masked:github]\t[masked:pin]', '3\t\\N\tnothing to see\t\\N']);
  const csv = await psql(agentToken, 'bot', 'select 1; copy public.users (email, ssn, age) to stdout with (format csv, header)');
  assert.deepEqual(csv, ['1', 'email,ssn,age', '"[masked:email]","[masked:ssn]",30', '"[masked:email]","[masked:ssn]",41', ',,']);
  const query = await psql(agentToken, 'bot', 'copy (select id, email from users where id = 1) to stdout');
  assert.deepEqual(query, ['[masked:column]\t[masked:column]'], 'the columns of a query cannot be named: all are masked');
  assert.equal((await direct('select count(*) from users where email like \'%@example.com\''))[0], '2');
});

test('policy test --mask shows what the rules in scope do to a sample, and to a column value', async () => {
  const out = await gw.cliOk(['policy', 'test', '--connection', 'app', '--identity', 'bot', '--mask', `the key is ${AWS_KEY}`]);
  assert.match(out, /^masked +the key is \[masked:aws\]$/m);
  assert.match(out, /^rules +pii-for-agents, profiles-hashed/m);
  const col = await gw.cliOk(['policy', 'test', '--connection', 'app', '--identity', 'bot', '--mask', 'alice@example.com', '--column', 'public.users.email']);
  assert.match(col, /^column +public\.users\.email: masked by rule pii-for-agents \(redact\) → \[masked:email\]$/m);
  const human = await gw.cliOk(['policy', 'test', '--connection', 'app', '--identity', 'alice', '--mask', `the key is ${AWS_KEY}`]);
  assert.match(human, /no mask rule applies/);
});

test('the recording holds the rows as the client got them: masked', async () => {
  await run('psql', [gw.dsn('app', 'bot', 'application_name=psql-mask-rec'), '-XAtq', '-c', 'select id, email, note from users order by id'], { env: { ...process.env, PGPASSWORD: agentToken } });
  const events = await endedSessionEvents(gw, 'psql-mask-rec');
  const result = events.find((e) => e.type === 'result' && Array.isArray(e.data.sample))!;
  assert.deepEqual((result.data.sample as unknown[][])[0], ['1', '[masked:email]', 'key [masked:aws] here']);
  // Which rule masked what and where, for every row (not just the sample) — never the value.
  assert.deepEqual(result.data.masked, [
    { field: 'rows[*][1]', rule: 'pii-for-agents', column: 'email', count: 2 },
    { field: 'rows[*][2]', rule: 'pii-for-agents', column: 'note', detector: 'aws', count: 1 },
    { field: 'rows[*][2]', rule: 'pii-for-agents', column: 'note', detector: 'github', count: 1 },
  ]);
  assert.ok(!JSON.stringify(events).includes('alice@example.com'));
  assert.ok(!JSON.stringify(events).includes(AWS_KEY));
});

test('errors and notices: a key of a masked column, a failing row, and secrets in a notice are masked; NOTIFY payloads too', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'notice-mask' } });
  const dup = await wire.query("insert into users (id, email) values (9, 'alice@example.com')");
  assert.equal(dup.errors[0]?.code, '23505');
  assert.equal(dup.errors[0]?.detail, 'Key (email)=([masked:email]) already exists.');
  const check = await wire.query("insert into users (id, email, age) values (10, 'carol@example.com', -1)");
  assert.equal(check.errors[0]?.code, '23514');
  assert.equal(check.errors[0]?.detail, 'Failing row contains ([masked:row]).');
  const notice = await wire.queryOk(`do $$ begin raise notice 'found %', '${AWS_KEY}' using detail = 'in ${GH_TOKEN}'; end $$`);
  assert.equal(notice.notices[0]?.message, 'found [masked:aws]');
  assert.equal(notice.notices[0]?.detail, 'in [masked:github]');
  await wire.queryOk('listen leaks');
  await cluster.sql(`notify leaks, 'token ${GH_TOKEN}'`, 'app');
  const after = await wire.queryOk('select 1');
  const note = after.messages.find((m) => m.type === 'A') ?? (await wire.next());
  assert.equal(decodeNotification(note.body).payload, 'token [masked:github]');
  wire.terminate();
  const events = await endedSessionEvents(gw, 'notice-mask');
  const dupResult = events.find((e) => e.type === 'result' && (e.data.error as { code?: string } | undefined)?.code === '23505')!;
  assert.deepEqual(dupResult.data.masked, [{ field: 'detail', rule: 'pii-for-agents', count: 1 }]);
  const noticeEvent = events.find((e) => e.type === 'notice')!;
  assert.deepEqual(noticeEvent.data.masked, [{ field: 'message', rule: 'pii-for-agents', detector: 'aws', count: 1 }, { field: 'detail', rule: 'pii-for-agents', detector: 'github', count: 1 }]);
  const notification = events.find((e) => e.type === 'notification')!;
  assert.deepEqual(notification.data.masked, [{ field: 'payload', rule: 'pii-for-agents', detector: 'github', count: 1 }]);
  // (The statements' own text holds what the client typed: the store's masking is about that.)
  assert.ok(!JSON.stringify(events.filter((e) => e.type !== 'query')).includes('alice@example.com'));
  assert.ok(!JSON.stringify(events).includes(GH_TOKEN));
  // The human sees the server's words.
  const human = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'alice', database: 'app', password: humanToken, params: { application_name: 'notice-clear' } });
  const clear = await human.wire.query("insert into users (id, email) values (9, 'alice@example.com')");
  assert.equal(clear.errors[0]?.detail, 'Key (email)=(alice@example.com) already exists.');
  human.wire.terminate();
});

test('a mask rule applied while a session is open applies to its next result', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'alice', database: 'app', password: humanToken, params: { application_name: 'mid-session' } });
  assert.deepEqual((await wire.queryOk('select email from users where id = 1')).rows, [['alice@example.com']]);
  const file = path.join(dir, 'policy2.yaml');
  writeFileSync(file, `${POLICY}  - name: humans-too\n    when: { kinds: [human] }\n    action: mask\n    mask: { columns: [email], style: partial }\n`);
  await gw.cliOk(['policy', 'apply', file]);
  try {
    assert.deepEqual((await wire.queryOk('select email from users where id = 1')).rows, [['*************.com']]);
    assert.deepEqual((await wire.queryOk('select id, email as e from users where id = 2')).rows, [['2', '***********.com']]);
  } finally {
    wire.terminate();
    writeFileSync(file, POLICY);
    await gw.cliOk(['policy', 'apply', file]);
  }
});

test('pipelined statements over tables not looked up yet keep their order; a row larger than a chunk is masked whole', async () => {
  await cluster.sql(`CREATE TABLE people (name text, ssn text); INSERT INTO people VALUES ('p', '111-22-3333'); GRANT ALL ON people TO scram_user;
    CREATE TABLE docs (id int, body text, email text); INSERT INTO docs VALUES (1, repeat('x', 1024 * 1024) || ' ${AWS_KEY}', 'a@b.c'); GRANT ALL ON docs TO scram_user;`, 'app');
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'pipeline-mask' } });
  wire.send([
    parseMessage('', 'select name, ssn from people'), bindMessage('', '', []), describeMessage('P', ''), executeMessage(),
    parseMessage('', "select 'between'"), bindMessage('', '', []), describeMessage('P', ''), executeMessage(),
    parseMessage('', 'select id, email from users where id = 1'), bindMessage('', '', []), describeMessage('P', ''), executeMessage(),
    syncMessage(),
  ]);
  const rows = (await wire.readUntilReady()).filter((m) => m.type === 'D').map((m) => decodeDataRow(m.body));
  assert.deepEqual(rows, [['p', '[masked:ssn]'], ['between'], ['1', '[masked:email]']]);
  // Rows of a result the client never had described cannot be read by column: every value is NULL.
  wire.send([parseMessage('', 'select name, ssn from people'), bindMessage('', '', []), executeMessage(), syncMessage()]);
  assert.deepEqual((await wire.readUntilReady()).filter((m) => m.type === 'D').map((m) => decodeDataRow(m.body)), [[null, null]]);
  const big = await wire.queryOk('select id, body, email from docs');
  assert.equal(big.rows[0]![1], `${'x'.repeat(1024 * 1024)} [masked:aws]`);
  assert.equal(big.rows[0]![2], 'a@b.c', 'docs.email is not public.users.email');
  wire.terminate();
});

test('when the catalog cannot be read, every column read from a table is masked (fail closed)', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'catalog-down' } });
  await cluster.sql('CREATE TABLE fresh (a text, b int); INSERT INTO fresh VALUES (\'visible?\', 7); GRANT ALL ON fresh TO scram_user;', 'app');
  const own = (await wire.queryOk('select pg_backend_pid()')).rows[0]![0];
  // The gateway's catalog connection (the one without an application name: pooled sessions keep
  // their client's) goes away, and no new one may log in.
  await cluster.sql(`ALTER ROLE scram_user CONNECTION LIMIT 1; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'scram_user' AND application_name = '' AND pid <> ${own}`, 'app');
  try {
    const r = await wire.queryOk("select a, b, 'literal' as c from fresh");
    assert.deepEqual(r.rows, [['[masked:a]', null, 'literal']]);
  } finally {
    await cluster.sql('ALTER ROLE scram_user CONNECTION LIMIT -1', 'app');
    wire.terminate();
  }
});

test('binary COPY: masked columns are NULL, the others intact', async () => {
  const r = spawnSync('psql', [gw.dsn('app', 'bot'), '-XAtq', '-c', 'select 1; copy users (id, email, ssn) to stdout (format binary)'], { env: { ...process.env, PGPASSWORD: agentToken }, timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr.toString());
  const out = r.stdout;
  const at = out.indexOf('PGCOPY\n\xff\r\n\0', 0, 'latin1');
  assert.ok(at >= 0, 'a binary COPY came out');
  let pos = at + 19;
  const tuples: Array<Array<string | null>> = [];
  for (;;) {
    const n = out.readInt16BE(pos);
    pos += 2;
    if (n === -1) break;
    const row: Array<string | null> = [];
    for (let i = 0; i < n; i++) {
      const len = out.readInt32BE(pos);
      pos += 4;
      row.push(len < 0 ? null : i === 0 ? String(out.readInt32BE(pos)) : out.toString('utf8', pos, pos + len));
      pos += Math.max(0, len);
    }
    tuples.push(row);
  }
  assert.deepEqual(tuples, [['1', null, null], ['2', null, null], ['3', null, null]]);
});

test('cursors, RETURNING and WITH name columns by where they come from too', async () => {
  const rows = await psql(agentToken, 'bot', 'begin; declare c cursor for select email as x from users order by id; fetch 1 from c; commit;');
  assert.deepEqual(rows, ['[masked:email]']);
  assert.deepEqual(await psql(agentToken, 'bot', 'update users set age = age where id = 1 returning email as x, id'), ['[masked:email]|1']);
  assert.deepEqual(await psql(agentToken, 'bot', 'with t as (select email as e from users where id = 1) select e from t'), ['[masked:email]']);
});

test('mixed result formats per column (Bind asks binary for some): each value masked in its own format', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'mixed-formats' } });
  // Described as a statement first (formats unknown until Bind), then bound with [binary, text, binary, binary].
  wire.send([parseMessage('m', 'select email, id, pin, profile from users where id = 1'), describeMessage('S', 'm'), syncMessage()]);
  await wire.readUntilReady();
  wire.send([bindMessage('', 'm', [], { resultFormats: [1, 0, 1, 1] }), executeMessage(), syncMessage()]);
  const row = (await wire.readUntilReady()).find((m) => m.type === 'D')!;
  let pos = 2;
  const cells: Array<Buffer | null> = [];
  for (let i = 0; i < row.body.readInt16BE(0); i++) {
    const len = row.body.readInt32BE(pos);
    pos += 4;
    cells.push(len < 0 ? null : row.body.subarray(pos, pos + len));
    pos += Math.max(0, len);
  }
  assert.equal(cells[0]!.toString(), '[masked:email]', 'binary text is the text');
  assert.equal(cells[1]!.toString(), '1');
  assert.equal(cells[2], null, 'a masked binary int4 is NULL');
  assert.equal(cells[3]![0], 1, 'binary jsonb keeps its version byte');
  assert.match(JSON.parse(cells[3]!.subarray(1).toString()), /^\[hash:profile:[0-9a-f]{16}\]$/);
  wire.terminate();
});

test('views (and views on views, materialized views) are traced to the table columns they show', async () => {
  await cluster.sql(`CREATE VIEW users_v AS SELECT id, email AS contact, lower(ssn) AS s, (SELECT max(email) FROM users) AS top FROM users;
    CREATE VIEW users_vv AS SELECT contact AS c2, id FROM users_v;
    CREATE MATERIALIZED VIEW users_m AS SELECT id, email FROM users;
    GRANT SELECT ON users_v, users_vv, users_m TO scram_user;`, 'app');
  assert.deepEqual(await psql(agentToken, 'bot', 'select id, contact, s from users_v where id = 1'), ['1|[masked:contact]|123-45-6789']);
  assert.deepEqual(await psql(agentToken, 'bot', 'select c2, id from users_vv where id = 2'), ['[masked:c2]|2']);
  assert.deepEqual(await psql(agentToken, 'bot', 'select email from users_m where id = 1'), ['[masked:email]']);
  // An expression in a view (lower(ssn), a subquery) is not traced: the documented limit.
  assert.deepEqual(await psql(agentToken, 'bot', 'select top from users_v limit 1'), ['bob@example.com']);
});

test('COPY of an unqualified name another relation also has (a decoy on the search path) masks every column', async () => {
  await cluster.sql('CREATE SCHEMA decoy; CREATE TABLE decoy.users (a int, b int); GRANT USAGE ON SCHEMA decoy TO scram_user; GRANT ALL ON decoy.users TO scram_user;', 'app');
  try {
    // (COPY has no order: rows are compared sorted.)
    assert.deepEqual((await psql(agentToken, 'bot', 'set search_path = public; copy users (id, age) to stdout')).sort(), ['[masked:column]\t[masked:column]', '[masked:column]\t[masked:column]', '[masked:column]\t\\N']);
    assert.deepEqual((await psql(agentToken, 'bot', 'copy public.users (id, email) to stdout')).sort(), ['1\t[masked:email]', '2\t[masked:email]', '3\t\\N'], 'a qualified name is known');
  } finally {
    await cluster.sql('DROP SCHEMA decoy CASCADE', 'app');
  }
});

test('a prepared statement a DO block may have redefined is not read by its old description: its rows are NULL until described again', async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'redefined' } });
  wire.send([parseMessage('q', 'select id, note from users order by id'), describeMessage('S', 'q'), syncMessage()]);
  await wire.readUntilReady();
  // Redefined where the gateway cannot read it: same name, email where id was.
  await wire.queryOk("do $$ begin execute 'deallocate q'; execute 'prepare q as select email, note from users order by id'; end $$");
  wire.send([bindMessage('', 'q', []), executeMessage(), syncMessage()]);
  const rows = (await wire.readUntilReady()).filter((m) => m.type === 'D').map((m) => decodeDataRow(m.body));
  assert.deepEqual(rows[0], [null, null], 'not read as (id, note)');
  wire.send([describeMessage('S', 'q'), bindMessage('', 'q', []), executeMessage(), syncMessage()]);
  const again = (await wire.readUntilReady()).filter((m) => m.type === 'D').map((m) => decodeDataRow(m.body));
  assert.deepEqual(again[0], ['[masked:email]', 'key [masked:aws] here'], 'described again: read by its columns');
  wire.terminate();
});

test("errors raised while a statement runs do not echo a masked value; errors from parsing keep the client's own words", async () => {
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: agentToken, params: { application_name: 'error-echo' } });
  const cast = await wire.query('select email::int from users where id = 1');
  assert.equal(cast.errors[0]?.code, '22P02');
  assert.equal(cast.errors[0]?.message, 'invalid input syntax for type integer: "[masked:value]"');
  const reg = await wire.query('select email::regclass from users where id = 1');
  assert.match(reg.errors[0]!.message, /^(relation|schema) "\[masked:value\]" does not exist$/, 'alice@example.com reads as schema alice@example');
  const json = await wire.query('select email::json from users where id = 1');
  assert.ok(!JSON.stringify(json.errors[0]).includes('alice'), JSON.stringify(json.errors[0]));
  const typo = await wire.query('select emial from users');
  assert.equal(typo.errors[0]?.message, 'column "emial" does not exist', 'a parse error quotes what the client wrote');
  wire.terminate();
});

test('sessions whose output was masked are found by the review filter (API and console "Has: masked output"); others are not', async () => {
  // The agent's email is masked for it; the human reads the same column as it is (no rule scopes
  // humans, and an email is no secret a detector keeps out of the record).
  for (const [identity, token, app] of [['bot', agentToken, 'review-bot'], ['alice', humanToken, 'review-human']] as const) {
    const r = await run('psql', [gw.dsn('app', identity, `application_name=${app}`), '-XAtq', '-c', 'select email from users where id = 1'], { env: { ...process.env, PGPASSWORD: token } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), identity === 'bot' ? '[masked:email]' : 'alice@example.com');
  }
  type Listed = { id: string; applicationName: string; review?: string[] };
  const list = async (query: string): Promise<Listed[]> => {
    const r = await fetch(`${gw.url}/api/v1/sessions?${query}`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
    assert.equal(r.status, 200);
    return (await r.json()) as Listed[];
  };
  // Indexed behind the recording, once ended: a session found by the words of its statement has
  // been reviewed in the same pass.
  let indexed: Listed[] = [];
  for (let i = 0; i < 80; i++) {
    indexed = (await list('q=email%20users&limit=1000')).filter((s) => s.applicationName.startsWith('review-'));
    if (indexed.length === 2) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.equal(indexed.length, 2, JSON.stringify(indexed));
  const masked = (await list('review=masked&limit=1000')).map((s) => s.applicationName);
  assert.ok(masked.includes('review-bot'), `the agent's session is flagged: ${JSON.stringify(indexed)}`);
  assert.ok(!masked.includes('review-human'), `the human's is not: ${JSON.stringify(indexed)}`);
});
