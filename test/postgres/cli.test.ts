// The `gatehouse` CLI as a contract operators' scripts rely on: commands, flags, output shapes,
// exit codes and readable errors; the API's authentication (401) and authorisation (403); and
// what lies at rest in the data directory (sealed target credentials, hashed tokens, a 0600 key).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

let pg: PgCluster;
let gw: TestGateway;
let tmp: string;

const ENV_PASSWORD = 'scram-secret'; // the real password of scram_user, given through --password-env
const FILE_PASSWORD = 'md5-secret'; // the real password of md5_user, given through --password-file

function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, PGCONNECT_TIMEOUT: '10', ...extra };
}

function psql(connection: string, identity: string, token: string, sql: string): Promise<RunResult> {
  return run('psql', [gw.dsn(connection, identity), '-w', '-XAt', '-c', sql], { env: cleanEnv({ PGPASSWORD: token }), timeoutMs: 20_000 });
}

/** `gatehouse token issue` → the token (last stdout line) and its id (named on stderr). */
async function issue(identity: string, ttl = '1h'): Promise<{ token: string; id: string; stdout: string }> {
  const r = await gw.cli(['token', 'issue', identity, '--ttl', ttl]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  const token = lines[lines.length - 1];
  const id = /(tok_\w+)/.exec(r.stderr)?.[1] ?? '';
  return { token, id, stdout: r.stdout };
}

function assertFails(r: RunResult, message: RegExp, what: string): void {
  assert.notEqual(r.code, 0, `${what} must exit non-zero; stdout=${r.stdout}`);
  assert.match(r.stderr, message, `${what}: stderr should explain: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at .*\(.*:\d+:\d+\)/, `${what}: no stack trace for a user error`);
}

async function waitEnded(identity: string): Promise<SessionView> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const list = JSON.parse(await gw.cliOk(['sessions', 'list', '--identity', identity, '--json'])) as SessionView[];
    if (list[0]?.endedAt || Date.now() > deadline) return list[0];
    await new Promise((r) => setTimeout(r, 100));
  }
}

function allFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...allFiles(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

before(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), 'gatehouse-cli-test-'));
  pg = await startPgCluster();
  gw = await startTestGateway();
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

test('identity add / list: each kind, text and JSON', async () => {
  for (const kind of ['agent', 'human', 'service']) {
    const out = await gw.cliOk(['identity', 'add', `id-${kind}`, '--kind', kind]);
    assert.match(out, new RegExp(`identity id-${kind} \\(${kind}\\) created`));
  }
  const text = await gw.cliOk(['identity', 'list']);
  const lines = text.trim().split('\n');
  assert.match(lines[0], /^NAME\s+KIND\s+ADMIN\s+CREATED$/);
  for (const kind of ['agent', 'human', 'service']) assert.match(text, new RegExp(`^id-${kind}\\s+${kind}\\s`, 'm'));
  assert.match(text, /^admin\s+human\s+yes\s/m, 'the bootstrap admin is listed as an administrator');
  const json = JSON.parse(await gw.cliOk(['identity', 'list', '--json'])) as Array<{ name: string; kind: string; admin: boolean; createdAt: string }>;
  const agent = json.find((i) => i.name === 'id-agent');
  assert.equal(agent?.kind, 'agent');
  assert.equal(agent?.admin, false);
  assert.ok(!Number.isNaN(Date.parse(agent!.createdAt)));
});

test('identity add: bad --kind, missing --kind, bad name and duplicate name are refused with a clear message', async () => {
  assertFails(await gw.cli(['identity', 'add', 'x2']), /--kind/, 'missing --kind');
  assertFails(await gw.cli(['identity', 'add', 'bad name!', '--kind', 'agent']), /invalid identity name/, 'bad name');
  assertFails(await gw.cli(['identity', 'add', 'id-agent', '--kind', 'agent']), /already exists/, 'duplicate identity');
  const names = (JSON.parse(await gw.cliOk(['identity', 'list', '--json'])) as Array<{ name: string }>).map((i) => i.name);
  assert.ok(!names.includes('x1') && !names.includes('x2') && !names.includes('bad name!'), 'nothing was created');
});

test('identity add with a bad --kind: refused, and the message names the kinds that are allowed', async () => {
  const r = await gw.cli(['identity', 'add', 'x1', '--kind', 'robot']);
  assertFails(r, /kind/i, 'bad --kind');
  // An operator must learn from the message what to type instead.
  assert.match(r.stderr, /agent/, `the message should list agent, human, service: ${r.stderr}`);
  assert.match(r.stderr, /human/);
  assert.match(r.stderr, /service/);
  const names = (JSON.parse(await gw.cliOk(['identity', 'list', '--json'])) as Array<{ name: string }>).map((i) => i.name);
  assert.ok(!names.includes('x1'));
});

test('token issue prints the token as its last line; the token authenticates', async () => {
  const { token, id, stdout } = await issue('id-service', '1h');
  assert.match(token, /^ght_[A-Za-z0-9_-]{40,}$/);
  assert.equal(stdout.trimEnd().split('\n').length, 1, 'stdout carries only the token; details go to stderr');
  assert.match(id, /^tok_/);
  const res = await fetch(`${gw.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { name: 'id-service', kind: 'service', admin: false });
  const list = JSON.parse(await gw.cliOk(['token', 'list', '--identity', 'id-service', '--json'])) as Array<Record<string, unknown>>;
  const t = list.find((x) => x.id === id);
  assert.equal(t?.state, 'active');
  const expires = Date.parse(String(t?.expiresAt)) - Date.parse(String(t?.createdAt));
  assert.ok(Math.abs(expires - 3600_000) < 5000, `--ttl 1h → expires one hour after creation (${expires} ms)`);
  assert.ok(!JSON.stringify(list).includes(token), 'token list never shows tokens');
});

test('token issue: bad --ttl values and unknown identities are refused clearly', async () => {
  assertFails(await gw.cli(['token', 'issue', 'id-agent', '--ttl', 'soon']), /invalid duration "soon"/, '--ttl soon');
  assertFails(await gw.cli(['token', 'issue', 'id-agent', '--ttl', '0s']), /duration must be positive|invalid duration/, '--ttl 0s');
  assertFails(await gw.cli(['token', 'issue', 'id-agent', '--ttl', '-5m']), /duration/, '--ttl -5m');
  assertFails(await gw.cli(['token', 'issue', 'nobody', '--ttl', '1h']), /identity "nobody" does not exist/, 'unknown identity');
  const tokens = JSON.parse(await gw.cliOk(['token', 'list', '--identity', 'id-agent', '--json'])) as unknown[];
  assert.equal(tokens.length, 0, 'no token was issued by the failed attempts');
  const tooLong = await gw.cli(['token', 'issue', 'id-agent', '--ttl', '91d']);
  assertFails(tooLong, /ttl/i, '--ttl 91d (beyond the 90 day maximum)');
  assert.equal((JSON.parse(await gw.cliOk(['token', 'list', '--identity', 'id-agent', '--json'])) as unknown[]).length, 0);
  // In the operator's units: the limit is 90d, not "7776000" seconds of a request body field.
  assert.match(tooLong.stderr, /90 ?d(ays)?\b/, `--ttl 91d: the message should state the 90d maximum: ${tooLong.stderr}`);
});

test('token revoke by id, by token and by --identity; the revoked token no longer authenticates', async () => {
  const a = await issue('id-human');
  const b = await issue('id-human');
  const c = await issue('id-human');
  const d = await issue('id-human');
  assert.match(await gw.cliOk(['token', 'revoke', a.id]), /^1 token revoked$/m);
  assert.match(await gw.cliOk(['token', 'revoke', b.token]), /^1 token revoked$/m);
  for (const t of [a.token, b.token]) {
    const res = await fetch(`${gw.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(res.status, 401);
    // Revoked, expired or unknown: the same answer (no oracle for the holder of a leaked token).
    assert.deepEqual(await res.json(), { error: 'invalid token' });
  }
  const ok = await fetch(`${gw.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${c.token}` } });
  assert.equal(ok.status, 200, 'other tokens of the identity are unaffected');
  assertFails(await gw.cli(['token', 'revoke', a.id]), /no active token/, 'revoking twice');
  assertFails(await gw.cli(['token', 'revoke', 'tok_doesnotexist']), /no active token/, 'unknown token id');
  assertFails(await gw.cli(['token', 'revoke']), /token id|--identity/, 'revoke without an argument');
  assert.match(await gw.cliOk(['token', 'revoke', '--identity', 'id-human']), /^2 tokens revoked$/m);
  const states = (JSON.parse(await gw.cliOk(['token', 'list', '--identity', 'id-human', '--json'])) as Array<{ id: string; state: string }>);
  assert.deepEqual(states.map((t) => t.state), ['revoked', 'revoked', 'revoked', 'revoked']);
  assert.ok([a, b, c, d].every((t) => states.some((s) => s.id === t.id)));
});

test('connection add with --password-env and --password-file; list never shows the password', async () => {
  const r1 = await gw.cli(['connection', 'add', 'pg-env', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port),
    '--database', 'app', '--user', 'scram_user', '--password-env', 'MY_DB_PASSWORD'], { env: { MY_DB_PASSWORD: ENV_PASSWORD } });
  assert.equal(r1.code, 0, r1.stderr);
  assert.match(r1.stdout, new RegExp(`connection pg-env \\(postgres\\) → scram_user@127\\.0\\.0\\.1:${pg.port}/app created \\(credential encrypted at rest\\)`));
  assert.ok(!r1.stdout.includes(ENV_PASSWORD) && !r1.stderr.includes(ENV_PASSWORD));

  const pwFile = path.join(tmp, 'pw.txt');
  writeFileSync(pwFile, FILE_PASSWORD + '\n', { mode: 0o600 });
  const r2 = await gw.cli(['connection', 'add', 'pg-file', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port),
    '--database', 'app', '--user', 'md5_user', '--password-file', pwFile, '--require-auth', 'md5']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, /credential encrypted at rest/);

  const r3 = await gw.cli(['connection', 'add', 'pg-trust', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port),
    '--database', 'app', '--user', 'trust_user']);
  assert.equal(r3.code, 0, r3.stderr);
  assert.doesNotMatch(r3.stdout, /credential/);

  const text = await gw.cliOk(['connection', 'list']);
  assert.match(text, /^NAME\s+TYPE\s+TARGET\s+CREDENTIAL\s+CREATED$/m);
  assert.match(text, new RegExp(`^pg-env\\s+postgres\\s+scram_user@127\\.0\\.0\\.1:${pg.port}/app\\s+stored\\s`, 'm'));
  assert.match(text, /^pg-file\s+postgres\s+md5_user@\S+\s+stored\s/m);
  assert.match(text, /^pg-trust\s+postgres\s+trust_user@\S+\s+none\s/m);
  const json = await gw.cliOk(['connection', 'list', '--json']);
  const rows = JSON.parse(json) as Array<Record<string, unknown>>;
  assert.equal(rows.find((c) => c.name === 'pg-env')?.hasPassword, true);
  assert.equal(rows.find((c) => c.name === 'pg-file')?.hasPassword, true);
  assert.equal(rows.find((c) => c.name === 'pg-trust')?.hasPassword, false);
  for (const out of [text, json]) {
    assert.ok(!out.includes(ENV_PASSWORD) && !out.includes(FILE_PASSWORD), 'connection list must never show a password');
  }
  for (const row of rows) {
    for (const key of Object.keys(row)) if (key !== 'hasPassword') assert.doesNotMatch(key, /password|secret|sealed/i, `connection field ${key}`);
  }
  // The raw API route says the same as the CLI.
  const res = await fetch(`${gw.url}/api/v1/connections`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
  const raw = await res.text();
  assert.ok(!raw.includes(ENV_PASSWORD) && !raw.includes(FILE_PASSWORD));

  // The stored credentials really work: psql through each connection.
  await gw.cliOk(['identity', 'add', 'operator', '--kind', 'human']);
  for (const c of ['pg-env', 'pg-file', 'pg-trust']) await gw.cliOk(['grant', 'operator', c]);
  const { token } = await issue('operator');
  for (const [c, user] of [['pg-env', 'scram_user'], ['pg-file', 'md5_user'], ['pg-trust', 'trust_user']]) {
    const r = await psql(c, 'operator', token, 'select current_user');
    assert.equal(r.code, 0, `${c}: ${r.stderr}`);
    assert.equal(r.stdout.trim(), user);
  }
});

test('connection add: missing env var, missing file, duplicate name, bad type and bad port are refused clearly', async () => {
  const base = ['--type', 'postgres', '--host', pg.host, '--port', String(pg.port), '--database', 'app', '--user', 'scram_user'];
  assertFails(await gw.cli(['connection', 'add', 'c-noenv', ...base, '--password-env', 'SURELY_UNSET_VAR_123']), /SURELY_UNSET_VAR_123 is not set/, 'unset --password-env');
  const missing = path.join(tmp, 'no-such-file');
  assertFails(await gw.cli(['connection', 'add', 'c-nofile', ...base, '--password-file', missing]), new RegExp(missing.replace(/[/.]/g, '\\$&')), 'missing --password-file');
  assertFails(await gw.cli(['connection', 'add', 'pg-env', ...base]), /connection "pg-env" already exists/, 'duplicate connection');
  assertFails(await gw.cli(['connection', 'add', 'c-mysql', '--type', 'mysql', '--host', 'h', '--database', 'd', '--user', 'u']), /type/, 'unsupported --type');
  assertFails(await gw.cli(['connection', 'add', 'c-port', '--type', 'postgres', '--host', 'h', '--port', 'notaport', '--database', 'd', '--user', 'u']), /port/, 'bad --port');
  const names = (JSON.parse(await gw.cliOk(['connection', 'list', '--json'])) as Array<{ name: string }>).map((c) => c.name);
  for (const n of ['c-noenv', 'c-nofile', 'c-mysql', 'c-port']) assert.ok(!names.includes(n), `${n} must not have been created`);
});

test('grant / revoke / grants: default deny, idempotent grant, clear errors', async () => {
  await gw.cliOk(['identity', 'add', 'grantee', '--kind', 'agent']);
  assert.match(await gw.cliOk(['grant', 'grantee', 'pg-env']), /^granted grantee access to pg-env$/m);
  assert.match(await gw.cliOk(['grant', 'grantee', 'pg-env']), /already had access/);
  const grants = JSON.parse(await gw.cliOk(['grants', '--json'])) as Array<{ identity: string; connection: string }>;
  assert.ok(grants.some((g) => g.identity === 'grantee' && g.connection === 'pg-env'));
  assert.ok(!grants.some((g) => g.identity === 'grantee' && g.connection !== 'pg-env'), 'only what was granted');
  assertFails(await gw.cli(['grant', 'nobody', 'pg-env']), /identity "nobody" does not exist/, 'grant to unknown identity');
  assertFails(await gw.cli(['grant', 'grantee', 'nowhere']), /connection "nowhere" does not exist/, 'grant on unknown connection');
  assert.match(await gw.cliOk(['revoke', 'grantee', 'pg-env']), /revoked grantee's access to pg-env/);
  assertFails(await gw.cli(['revoke', 'grantee', 'pg-env']), /has no grant/, 'revoking a grant that does not exist');
  const after = JSON.parse(await gw.cliOk(['grants', '--json'])) as Array<{ identity: string }>;
  assert.ok(!after.some((g) => g.identity === 'grantee'));
});

test('sessions list / show / replay, text and JSON, for a real psql session', async () => {
  await gw.cliOk(['identity', 'add', 'reviewer-subject', '--kind', 'agent']);
  await gw.cliOk(['grant', 'reviewer-subject', 'pg-trust']);
  const { token } = await issue('reviewer-subject');
  const r = await psql('pg-trust', 'reviewer-subject', token, "select 'cli-marker' as label, 7 as n");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'cli-marker|7');
  const s = await waitEnded('reviewer-subject');
  assert.ok(s, 'session listed');
  assert.match(s.id, /^s_/);

  const listText = await gw.cliOk(['sessions', 'list']);
  assert.match(listText, /^ID\s+STARTED\s+IDENTITY\s+KIND\s+CONNECTION\s+APPLICATION\s+EVENTS\s+END$/m);
  assert.match(listText, new RegExp(`^${s.id}\\s+\\S+\\s+reviewer-subject\\s+agent\\s+pg-trust\\s+psql\\s+\\d+\\s+client terminated$`, 'm'));
  const filtered = JSON.parse(await gw.cliOk(['sessions', 'list', '--connection', 'pg-trust', '--json'])) as SessionView[];
  assert.ok(filtered.length >= 1 && filtered.every((x) => x.connection === 'pg-trust'));
  const all = JSON.parse(await gw.cliOk(['sessions', 'list', '--json'])) as SessionView[];
  assert.ok(all.length >= 4, 'every psql session so far is listed');
  for (let i = 1; i < all.length; i++) assert.ok(all[i - 1].startedAt >= all[i].startedAt, 'sessions list is newest first');
  assert.equal(all[0].id, s.id, 'the newest session comes first');
  const limited = JSON.parse(await gw.cliOk(['sessions', 'list', '--limit', '1', '--json'])) as SessionView[];
  assert.deepEqual(limited.map((x) => x.id), [s.id]);

  const showText = await gw.cliOk(['sessions', 'show', s.id]);
  assert.match(showText, new RegExp(`session\\s+${s.id} \\(postgres\\)`));
  assert.match(showText, /identity\s+reviewer-subject \(agent\)/);
  assert.match(showText, new RegExp(`connection\\s+pg-trust → trust_user@127\\.0\\.0\\.1:${pg.port}/app`));
  assert.match(showText, /query\s+select 'cli-marker' as label, 7 as n/);
  assert.match(showText, /→ SELECT 1 · 1 row returned · [\d.]+ m?s/);
  assert.match(showText, /client terminated/);

  const showJson = JSON.parse(await gw.cliOk(['sessions', 'show', s.id, '--json'])) as { session: SessionView; events: EventView[] };
  assert.equal(showJson.session.id, s.id);
  assert.deepEqual(showJson.events.map((e) => e.seq), showJson.events.map((_, i) => i), 'events are numbered from 0 without gaps');
  assert.equal(showJson.events[0].type, 'session.start');
  assert.equal(showJson.events.at(-1)?.type, 'session.end');

  const replay = await gw.cliOk(['sessions', 'replay', s.id]);
  assert.match(replay, /app=> select 'cli-marker' as label, 7 as n;/);
  assert.match(replay, /^\s*label\s+\|\s+n\s*$/m);
  assert.match(replay, /^ cli-marker \| 7$/m);
  assert.match(replay, /^\(1 row\)$/m);

  for (const sub of ['show', 'replay']) {
    assertFails(await gw.cli(['sessions', sub, 's_doesnotexist']), /session "s_doesnotexist" does not exist/, `sessions ${sub} of an unknown id`);
  }
});

test('sessions show / list / replay escape what the client chose: terminal escapes, newlines, C1 and bidi characters never reach the reader raw', async () => {
  await gw.cliOk(['identity', 'add', 'escape-artist', '--kind', 'agent']);
  await gw.cliOk(['grant', 'escape-artist', 'pg-trust']);
  const { token } = await issue('escape-artist');
  const ESC = '\x1b';
  // Erase the line and go back to column 1: raw, the reader would see only what follows.
  const erase = `select 1; -- ${ESC}[2K${ESC}[1G`;
  const twoLines = "select 'first'\n;\nselect 'second' -- \r\u009b2K\u202eevil";
  const notice = `do $$ begin raise notice 'hi ${ESC}[31mred'; end $$`;
  const r = await run('psql', [gw.dsn('pg-trust', 'escape-artist'), '-w', '-XAt', '-c', erase, '-c', twoLines, '-c', notice, '-c', `select * from "no${ESC}[8mtable"`],
    { env: cleanEnv({ PGPASSWORD: token, PGAPPNAME: `app${ESC}]0;pwned${ESC}\\` }), timeoutMs: 20_000 });
  assert.match(r.stderr, /does not exist/);
  const s = await waitEnded('escape-artist');
  assert.equal(s.applicationName, `app${ESC}]0;pwned${ESC}\\`, 'JSON stays exact');

  const show = await gw.cliOk(['sessions', 'show', s.id]);
  const replay = await gw.cliOk(['sessions', 'replay', s.id]);
  const list = await gw.cliOk(['sessions', 'list', '--identity', 'escape-artist']);
  for (const [what, text] of [['show', show], ['replay', replay], ['list', list]]) {
    assert.ok(!/[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f\u202a-\u202e\u2066-\u2069]/.test(text), `${what}: no raw control or bidi character: ${JSON.stringify(text)}`);
  }
  for (const text of [show, list]) assert.ok(text.includes('app\\x1b]0;pwned\\x1b\\'), `application_name escaped: ${text}`);
  assert.ok(show.includes(String.raw`query    select 1; -- \x1b[2K\x1b[1G`), show);
  assert.ok(show.includes(String.raw`query    select 'first'\n;\nselect 'second' -- \r\u009b2K\u202eevil`), 'newlines are shown, not collapsed');
  assert.ok(show.includes(String.raw`NOTICE 00000 hi \x1b[31mred`), show);
  assert.ok(show.includes(String.raw`relation "no\x1b[8mtable" does not exist`), show);
  assert.ok(replay.includes(String.raw`app=> select 1; -- \x1b[2K\x1b[1G`), replay);
  assert.ok(replay.includes(String.raw`app=> select 'first'\n;\nselect 'second' -- \r\u009b2K\u202eevil;`), replay);
  // Every line the timeline prints is one of its own: the statement's newlines added none.
  assert.equal(show.split('\n').filter((l) => /^\s+\+\d/.test(l)).length, show.split('\n').filter((l) => /#\d+ /.test(l)).length);
  const json = JSON.parse(await gw.cliOk(['sessions', 'show', s.id, '--json'])) as { events: EventView[] };
  assert.ok(json.events.some((e) => e.type === 'query' && e.data.text === twoLines), 'the recording keeps the exact text');
});

test('connection rm: the connection goes, its grants go, its recordings stay', async () => {
  const before = JSON.parse(await gw.cliOk(['sessions', 'list', '--connection', 'pg-trust', '--json'])) as SessionView[];
  assert.ok(before.length >= 1);
  assert.match(await gw.cliOk(['connection', 'rm', 'pg-trust']), /connection pg-trust removed/);
  const names = (JSON.parse(await gw.cliOk(['connection', 'list', '--json'])) as Array<{ name: string }>).map((c) => c.name);
  assert.ok(!names.includes('pg-trust'));
  const grants = JSON.parse(await gw.cliOk(['grants', '--json'])) as Array<{ connection: string }>;
  assert.ok(!grants.some((g) => g.connection === 'pg-trust'), 'grants on a removed connection go with it');
  const afterRm = JSON.parse(await gw.cliOk(['sessions', 'list', '--connection', 'pg-trust', '--json'])) as SessionView[];
  assert.deepEqual(afterRm.map((s) => s.id), before.map((s) => s.id), 'recordings outlive the connection');
  assertFails(await gw.cli(['connection', 'rm', 'pg-trust']), /connection "pg-trust" does not exist/, 'removing twice');
  const { token } = await issue('reviewer-subject');
  const r = await psql('pg-trust', 'reviewer-subject', token, 'select 1');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /connection "pg-trust" does not exist/);
});

test('API: missing or bad token → 401, non-admin token → 403; the CLI exits non-zero with a readable message', async () => {
  // Raw HTTP.
  const none = await fetch(`${gw.url}/api/v1/identities`);
  assert.equal(none.status, 401);
  const bad = await fetch(`${gw.url}/api/v1/identities`, { headers: { authorization: 'Bearer ght_not-a-real-token-000000000000000000000000000' } });
  assert.equal(bad.status, 401);
  const basic = await fetch(`${gw.url}/api/v1/identities`, { headers: { authorization: 'Basic YWRtaW46YWRtaW4=' } });
  assert.equal(basic.status, 401);
  const { token: agentToken } = await issue('id-agent');
  for (const [method, p] of [['GET', '/api/v1/identities'], ['GET', '/api/v1/connections'], ['GET', '/api/v1/sessions'], ['GET', '/api/v1/grants'], ['GET', '/api/v1/tokens']]) {
    const res = await fetch(`${gw.url}${p}`, { method, headers: { authorization: `Bearer ${agentToken}` } });
    assert.equal(res.status, 403, `${method} ${p} with a non-admin token`);
  }
  const health = await fetch(`${gw.url}/api/v1/health`);
  assert.equal(health.status, 200, 'health needs no token');

  // The CLI.
  const noToken = await gw.cli(['identity', 'list'], { env: { GATEHOUSE_TOKEN: '' } });
  assertFails(noToken, /token/i, 'no token at all');
  const badToken = await gw.cli(['identity', 'list'], { token: 'ght_not-a-real-token-000000000000000000000000000' });
  assertFails(badToken, /invalid token/, 'bad token');
  const nonAdmin = await gw.cli(['identity', 'add', 'sneaky', '--kind', 'agent'], { token: agentToken });
  assertFails(nonAdmin, /identity "id-agent" is not an administrator/, 'non-admin token');
  const nonAdminRead = await gw.cli(['sessions', 'list'], { token: agentToken });
  assertFails(nonAdminRead, /not an administrator/, 'non-admin reading sessions');
  const names = (JSON.parse(await gw.cliOk(['identity', 'list', '--json'])) as Array<{ name: string }>).map((i) => i.name);
  assert.ok(!names.includes('sneaky'), 'the refused command changed nothing');
  const { token: expiring } = await issue('admin', '1s');
  await new Promise((r) => setTimeout(r, 1200));
  assertFails(await gw.cli(['identity', 'list'], { token: expiring }), /invalid token \(unknown, expired or revoked: sign in again/, 'expired admin token');
  const unreachable = await gw.cli(['identity', 'list'], { env: { GATEHOUSE_URL: 'http://127.0.0.1:9' } });
  assertFails(unreachable, /cannot reach the gateway/, 'unreachable gateway');
});

test('--gateway and --token flags take precedence over the environment', async () => {
  const r = await gw.cli(['--gateway', gw.url, '--token', gw.adminToken, 'identity', 'list', '--json'],
    { env: { GATEHOUSE_URL: 'http://127.0.0.1:9', GATEHOUSE_TOKEN: 'ght_wrongwrongwrongwrongwrongwrongwrongwrongwrong' } });
  assert.equal(r.code, 0, r.stderr);
  assert.ok((JSON.parse(r.stdout) as Array<{ name: string }>).some((i) => i.name === 'admin'));
});

test('at rest: target passwords only sealed, tokens only hashed, key file 0600 and not in the database', async () => {
  const dbFile = path.join(gw.dataDir, 'gatehouse.db');
  const keyFile = path.join(gw.dataDir, 'secret.key');
  assert.equal(statSync(keyFile).mode & 0o777, 0o600, 'secret.key must be 0600');
  assert.equal(statSync(path.join(gw.dataDir, 'gatehouse.db')).mode & 0o777, 0o600, 'the store (recordings, token hashes, sealed credentials) must be 0600');
  const key = readFileSync(keyFile, 'utf8').trim();
  assert.equal(Buffer.from(key, 'base64').length, 32, 'a 256-bit key');

  const db = new DatabaseSync(dbFile, { readOnly: true });
  try {
    const conns = db.prepare('SELECT * FROM connections').all() as Array<Record<string, unknown>>;
    const envRow = conns.find((c) => c.name === 'pg-env');
    const fileRow = conns.find((c) => c.name === 'pg-file');
    assert.ok(envRow && fileRow, 'connections are in the store');
    for (const row of conns) {
      const flat = Object.values(row).map((v) => (v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : String(v))).join('\u0000');
      assert.ok(!flat.includes(ENV_PASSWORD) && !flat.includes(FILE_PASSWORD), `password in the connections row ${String(row.name)}`);
    }
    const sealed = envRow.sealed_secret;
    assert.ok(sealed instanceof Uint8Array && sealed.length >= 1 + 12 + 16 + ENV_PASSWORD.length, 'the credential is stored sealed (version, IV, tag, ciphertext)');

    const tokens = db.prepare('SELECT * FROM tokens').all() as Array<Record<string, unknown>>;
    assert.ok(tokens.length > 5);
    for (const t of tokens) {
      assert.match(String(t.token_hash), /^[0-9a-f]{64}$/, 'tokens are stored as SHA-256 hashes');
      for (const v of Object.values(t)) assert.ok(!String(v).startsWith('ght_'), 'no token in clear in the tokens table');
    }
    const adminHash = createHash('sha256').update(gw.adminToken).digest('hex');
    assert.ok(tokens.some((t) => t.token_hash === adminHash), 'the admin token is known by its hash');
  } finally {
    db.close();
  }

  // Byte-level: nothing secret anywhere in the data directory's database files (db, WAL, journal).
  const { token: fresh } = await issue('id-service');
  const dbFiles = allFiles(gw.dataDir).filter((f) => path.basename(f).startsWith('gatehouse.db'));
  assert.ok(dbFiles.length >= 1);
  const needles = [ENV_PASSWORD, FILE_PASSWORD, gw.adminToken, fresh, key];
  for (const f of dbFiles) {
    const bytes = readFileSync(f);
    for (const n of needles) {
      assert.equal(bytes.indexOf(Buffer.from(n, 'utf8')), -1, `${path.basename(f)} contains a secret (${n.slice(0, 6)}…)`);
    }
  }
  // And the target passwords are nowhere in the data directory at all (key file, TLS files included).
  for (const f of allFiles(gw.dataDir)) {
    const bytes = readFileSync(f);
    for (const n of [ENV_PASSWORD, FILE_PASSWORD]) assert.equal(bytes.indexOf(Buffer.from(n)), -1, `${f} contains a target password`);
  }
});
