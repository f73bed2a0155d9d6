// Authentication and access decisions on the PostgreSQL listener, end to end with real psql and
// a raw wire client (for the exact SQLSTATE): every refusal is checked both as the client sees it
// and as the recording holds it, and the gateway must keep serving good logins afterwards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import { pgLogin, type LoginSession } from '../support/pg-login.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

let pg: PgCluster;
let gw: TestGateway;
let aliceToken: string;
/** Every token and secret used in this file: none may ever show up in the gateway's logs. */
const secrets = new Set<string>();

function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, PGCONNECT_TIMEOUT: '10', ...extra };
}

function psql(connection: string, identity: string, token: string | undefined, sql: string, extra = ''): Promise<RunResult> {
  return run('psql', [gw.dsn(connection, identity, extra), '-w', '-XAt', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    env: cleanEnv(token === undefined ? {} : { PGPASSWORD: token }), timeoutMs: 20_000,
  });
}

function wire(connection: string, identity: string, token: string): Promise<LoginSession> {
  return pgLogin({ host: gw.pgHost, port: gw.pgPort, user: identity, database: connection, password: token, tls: true });
}

// The recording is read through the API the CLI uses (`sessions list --json` / `sessions show ID
// --json` print exactly these documents; cli.test.ts covers the CLI itself). Going straight to
// the API keeps this file fast: every CLI call is a fresh Node process.
async function api<T>(p: string): Promise<T> {
  const res = await fetch(`${gw.url}${p}`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
  assert.equal(res.status, 200, `GET ${p}`);
  return (await res.json()) as T;
}

async function listSessions(): Promise<SessionView[]> {
  return api<SessionView[]>('/api/v1/sessions?limit=10000');
}

async function showSession(id: string): Promise<{ session: SessionView; events: EventView[] }> {
  return api<{ session: SessionView; events: EventView[] }>(`/api/v1/sessions/${id}`);
}

/** Sessions that appeared since `before` (ids), oldest first; waits until each has ended. */
async function newSessions(beforeIds: Set<string>, expected: number): Promise<SessionView[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const fresh = (await listSessions()).filter((s) => !beforeIds.has(s.id)).reverse();
    if ((fresh.length >= expected && fresh.every((s) => s.endedAt !== null)) || Date.now() > deadline) return fresh;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function snapshot(): Promise<Set<string>> {
  return new Set((await listSessions()).map((s) => s.id));
}

async function issue(identity: string, ttl = '1h'): Promise<{ token: string; id: string }> {
  const r = await gw.cli(['token', 'issue', identity, '--ttl', ttl]);
  assert.equal(r.code, 0, r.stderr);
  const token = r.stdout.trim().split('\n').pop()!;
  const id = /token (tok_\S+) for/.exec(r.stderr)?.[1];
  assert.ok(id, `token issue names the token id on stderr: ${r.stderr}`);
  secrets.add(token);
  return { token, id };
}

/** The gateway is still up and serving: a good login works right after a refusal. */
async function assertGoodLogin(): Promise<void> {
  const r = await psql('app', 'alice', aliceToken, 'select 40 + 2');
  assert.equal(r.code, 0, `a good login after a refusal must work: ${r.stderr}`);
  assert.equal(r.stdout.trim(), '42');
}

interface Refusal { code: string; message: RegExp; reason: RegExp; identity: string; kind: string; connection: string }

/**
 * Tries the login with psql and with the raw client, and checks: psql fails with the message,
 * the raw client gets a FATAL ErrorResponse with the SQLSTATE and is disconnected, and the two
 * attempts are recorded as refused sessions carrying an access.denied event with that SQLSTATE.
 */
async function assertRefused(connection: string, user: string, token: string, want: Refusal): Promise<void> {
  const beforeIds = await snapshot();

  const r = await psql(connection, user, token, 'select 1');
  assert.equal(r.code, 2, `psql must fail to connect (exit 2); stdout=${r.stdout} stderr=${r.stderr}`);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /FATAL: /);
  assert.match(r.stderr, want.message);

  const w = await wire(connection, user, token);
  assert.equal(w.ready, false, 'the raw client must not get ReadyForQuery');
  assert.ok(w.error, 'the raw client must get an ErrorResponse');
  assert.equal(w.error.code, want.code, `SQLSTATE: ${JSON.stringify(w.error)}`);
  assert.equal(w.error.severity, 'FATAL');
  assert.match(w.error.message, want.message);
  assert.ok(w.closedAfterError, 'the gateway must close the connection after a FATAL error');
  assert.ok(!w.authRequests.includes(0), 'no AuthenticationOk may be sent before a refusal');
  if (want.code === '28P01') {
    // Unknown, expired, revoked or another identity's: the client is told the same (no oracle).
    assert.equal(w.error.detail, 'invalid token', JSON.stringify(w.error));
    assert.match(r.stderr, /DETAIL: {2}invalid token/);
    for (const word of ['unknown', 'expired', 'revoked', 'another identity', 'not recognised']) {
      assert.ok(!r.stderr.includes(word) && !JSON.stringify(w.error.fields).includes(word), `the client is not told "${word}": ${r.stderr}`);
    }
  }

  const fresh = await newSessions(beforeIds, 2);
  assert.equal(fresh.length, 2, `each refused attempt is recorded once: ${JSON.stringify(fresh)}`);
  for (const s of fresh) {
    assert.ok(s.endReason?.startsWith('refused:'), `endReason: ${s.endReason}`);
    assert.match(s.endReason!, want.reason);
    assert.equal(s.identity.name, want.identity);
    assert.equal(s.identity.kind, want.kind);
    assert.equal(s.connection, want.connection);
    assert.equal(s.protocol, 'postgres');
    assert.match(s.clientAddr, /^(::ffff:)?127\.0\.0\.1:\d+$/);
    assert.ok(s.endedAt !== null);
    const { events } = await showSession(s.id);
    const types = events.map((e) => e.type);
    assert.deepEqual(types, ['session.start', 'access.denied', 'session.end'], `events of a refused session: ${types.join(',')}`);
    const denied = events[1];
    assert.equal(denied.data.code, want.code);
    assert.match(String(denied.data.message), want.message);
    // The recording keeps why, which the client was not told.
    if (want.code === '28P01') assert.match(String(denied.data.reason), want.reason);
    assert.equal(events.some((e) => e.type === 'query' || e.type === 'execute'), false);
    assert.ok(!JSON.stringify(events).includes(token), 'the presented token must not be recorded');
  }
  await assertGoodLogin();
}

before(async () => {
  pg = await startPgCluster();
  gw = await startTestGateway();
  secrets.add(gw.adminToken);
  secrets.add('scram-secret');
  secrets.add('md5-secret');
  aliceToken = await gw.setupPostgres({ identity: 'alice', connection: 'app', cluster: pg });
  secrets.add(aliceToken);
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
});

test('a good token with a grant logs in: psql works and the raw client gets AuthenticationOk then ReadyForQuery', async () => {
  const beforeIds = await snapshot();
  const r = await psql('app', 'alice', aliceToken, 'select current_user');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'scram_user');
  const w = await wire('app', 'alice', aliceToken);
  assert.equal(w.error, undefined, JSON.stringify(w.error));
  assert.equal(w.ready, true);
  assert.equal(w.tls, true);
  assert.deepEqual(w.authRequests, [3, 0], 'cleartext password request, then AuthenticationOk');
  assert.ok(w.parameters.has('server_version'), 'ParameterStatus from the target is relayed');
  await w.close();
  const fresh = await newSessions(beforeIds, 2);
  assert.equal(fresh.length, 2);
  for (const s of fresh) {
    assert.equal(s.endReason, 'client terminated');
    assert.equal(s.identity.name, 'alice');
    assert.equal(s.identity.kind, 'agent');
  }
});

test('wrong token: 28P01, recorded as refused', async () => {
  const bogus = 'ght_' + 'x'.repeat(43);
  secrets.add(bogus);
  await assertRefused('app', 'alice', bogus, {
    code: '28P01', message: /password authentication failed for user "alice"/, reason: /token unknown/,
    identity: 'alice', kind: 'unknown', connection: 'app',
  });
});

test('a refused attempt reads clearly in sessions list / show / replay', async () => {
  const bogus = 'ght_' + 'q'.repeat(43);
  secrets.add(bogus);
  const beforeIds = await snapshot();
  const r = await psql('app', 'alice', bogus, 'select 1');
  assert.equal(r.code, 2);
  const [s] = await newSessions(beforeIds, 1);
  assert.ok(s);
  const list = await gw.cliOk(['sessions', 'list']);
  assert.match(list, new RegExp(`^${s.id}\\s.*\\salice\\s+unknown\\s+app\\s.*refused: token unknown$`, 'm'));
  const show = await gw.cliOk(['sessions', 'show', s.id]);
  assert.match(show, /^identity\s+alice \(unknown\)$/m);
  assert.match(show, /#1 denied\s+28P01 password authentication failed for user "alice" \(invalid token\)/);
  assert.match(show, /refused: token unknown/);
  const replay = await gw.cliOk(['sessions', 'replay', s.id]);
  assert.match(replay, /^FATAL:  password authentication failed for user "alice"$/m);
  assert.match(replay, /^-- session ended: refused: token unknown$/m);
});

test('a refused attempt is recorded with the application_name the client sent (bad token, no grant, unknown connection)', async () => {
  await gw.cliOk(['identity', 'add', 'appname_nogrant', '--kind', 'agent']);
  const { token } = await issue('appname_nogrant');
  for (const [connection, user, tok, reason] of [
    ['app', 'alice', 'ght_' + 'n'.repeat(43), /token unknown/],
    ['app', 'appname_nogrant', token, /no grant/],
    ['nosuchdb', 'alice', aliceToken, /does not exist/],
  ] as const) {
    const beforeIds = await snapshot();
    const r = await psql(connection, user, tok, 'select 1', 'application_name=deploy-bot');
    assert.equal(r.code, 2, r.stderr);
    const w = await pgLogin({ host: gw.pgHost, port: gw.pgPort, user, database: connection, password: tok, tls: true, params: { application_name: 'raw-client' } });
    assert.equal(w.ready, false);
    const fresh = await newSessions(beforeIds, 2);
    assert.deepEqual(fresh.map((s) => s.applicationName), ['deploy-bot', 'raw-client'], `${connection}/${user}: ${JSON.stringify(fresh)}`);
    for (const s of fresh) {
      assert.match(s.endReason ?? '', reason);
      const { events } = await showSession(s.id);
      assert.equal(events[0]?.data.applicationName, s.applicationName, 'session.start carries it too');
    }
  }
});

test('a password that is not a token at all (empty-ish, garbage): 28P01', async () => {
  await assertRefused('app', 'alice', 'hunter2', {
    code: '28P01', message: /password authentication failed for user "alice"/, reason: /token unknown/,
    identity: 'alice', kind: 'unknown', connection: 'app',
  });
});

test('expired token: 28P01, and token list shows it expired', async () => {
  const { token, id } = await issue('alice', '1s');
  await new Promise((r) => setTimeout(r, 1300));
  const tokens = JSON.parse(await gw.cliOk(['token', 'list', '--identity', 'alice', '--json'])) as Array<{ id: string; state: string }>;
  assert.equal(tokens.find((t) => t.id === id)?.state, 'expired');
  await assertRefused('app', 'alice', token, {
    code: '28P01', message: /password authentication failed for user "alice"/, reason: /token expired/,
    identity: 'alice', kind: 'unknown', connection: 'app',
  });
});

test('revoked token (by the token itself): works before, 28P01 after', async () => {
  const { token } = await issue('alice');
  const ok = await psql('app', 'alice', token, 'select 1');
  assert.equal(ok.code, 0, ok.stderr);
  const out = await gw.cliOk(['token', 'revoke', token]);
  assert.match(out, /1 token revoked/);
  await assertRefused('app', 'alice', token, {
    code: '28P01', message: /password authentication failed for user "alice"/, reason: /token revoked/,
    identity: 'alice', kind: 'unknown', connection: 'app',
  });
});

test('revoked token (by id): 28P01', async () => {
  const { token, id } = await issue('alice');
  const ok = await psql('app', 'alice', token, 'select 1');
  assert.equal(ok.code, 0, ok.stderr);
  await gw.cliOk(['token', 'revoke', id]);
  const tokens = JSON.parse(await gw.cliOk(['token', 'list', '--identity', 'alice', '--json'])) as Array<{ id: string; state: string }>;
  assert.equal(tokens.find((t) => t.id === id)?.state, 'revoked');
  await assertRefused('app', 'alice', token, {
    code: '28P01', message: /password authentication failed for user "alice"/, reason: /token revoked/,
    identity: 'alice', kind: 'unknown', connection: 'app',
  });
});

test("another identity's token: 28P01 even though that identity has a grant", async () => {
  await gw.cliOk(['identity', 'add', 'bob', '--kind', 'human']);
  await gw.cliOk(['grant', 'bob', 'app']);
  const { token } = await issue('bob');
  const ok = await psql('app', 'bob', token, 'select 1');
  assert.equal(ok.code, 0, `bob's own login works: ${ok.stderr}`);
  await assertRefused('app', 'alice', token, {
    code: '28P01', message: /password authentication failed for user "alice"/, reason: /another identity/,
    identity: 'alice', kind: 'unknown', connection: 'app',
  });
});

test('no grant: 28000 (default deny), recorded with the authenticated identity', async () => {
  await gw.cliOk(['identity', 'add', 'carol', '--kind', 'service']);
  const { token } = await issue('carol');
  await assertRefused('app', 'carol', token, {
    code: '28000', message: /identity "carol" has no grant on connection "app"/, reason: /no grant/,
    identity: 'carol', kind: 'service', connection: 'app',
  });
});

test('grant then revoke: works while granted, 28000 afterwards', async () => {
  await gw.cliOk(['identity', 'add', 'dave', '--kind', 'agent']);
  const { token } = await issue('dave');
  assert.match(await gw.cliOk(['grant', 'dave', 'app']), /granted dave access to app/);
  const ok = await psql('app', 'dave', token, 'select current_user');
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.trim(), 'scram_user');
  assert.match(await gw.cliOk(['revoke', 'dave', 'app']), /revoked/);
  await assertRefused('app', 'dave', token, {
    code: '28000', message: /identity "dave" has no grant on connection "app"/, reason: /no grant/,
    identity: 'dave', kind: 'agent', connection: 'app',
  });
});

test('unknown connection: 3D000', async () => {
  await assertRefused('nosuchdb', 'alice', aliceToken, {
    code: '3D000', message: /connection "nosuchdb" does not exist/, reason: /does not exist/,
    identity: 'alice', kind: 'agent', connection: 'nosuchdb',
  });
});

test('unknown connection with a bad token: the token is checked first (28P01), so connection names do not leak', async () => {
  await assertRefused('nosuchdb', 'alice', 'ght_' + 'y'.repeat(43), {
    code: '28P01', message: /password authentication failed for user "alice"/, reason: /token unknown/,
    identity: 'alice', kind: 'unknown', connection: 'nosuchdb',
  });
});

for (const [user, password] of [['scram_user', 'scram-secret'], ['md5_user', 'md5-secret'], ['trust_user', undefined]] as const) {
  test(`upstream ${user} (${user.split('_')[0]} auth) works through the gateway and is recorded with its target user`, async () => {
    const conn = `app_${user.split('_')[0]}`;
    const identity = `via_${user}`;
    const token = await gw.setupPostgres({ identity, connection: conn, cluster: pg, user, ...(password ? { password } : {}) });
    secrets.add(token);
    const beforeIds = await snapshot();
    const r = await psql(conn, identity, token, 'select current_user, current_database()');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `${user}|app`);
    if (password) assert.ok(!r.stdout.includes(password) && !r.stderr.includes(password));
    const [s] = await newSessions(beforeIds, 1);
    assert.ok(s, 'session recorded');
    assert.equal(s.identity.name, identity);
    assert.equal(s.connection, conn);
    assert.equal(s.target.user, user);
    assert.equal(s.target.database, 'app');
    assert.equal(s.target.port, pg.port);
    assert.equal(s.endReason, 'client terminated');
    const { events } = await showSession(s.id);
    const q = events.find((e) => e.type === 'query');
    assert.equal(q?.data.text, 'select current_user, current_database()');
    const res = events.find((e) => e.type === 'result' && e.data.ref === q?.seq);
    assert.deepEqual(res?.data.sample, [[user, 'app']]);
    const list = JSON.parse(await gw.cliOk(['connection', 'list', '--json'])) as Array<{ name: string; hasPassword: boolean }>;
    assert.equal(list.find((c) => c.name === conn)?.hasPassword, password !== undefined);
  });
}

for (const user of ['scram_user', 'md5_user'] as const) {
  test(`wrong stored upstream password (${user}): client gets 08006, the password never leaks`, async () => {
    // A correct login to the same role through another connection first: whatever the gateway
    // remembers from it (pooled backends, SCRAM key material) must not stand in for this
    // connection's own, wrong, credential.
    const good = await gw.setupPostgres({ identity: `good_${user.split('_')[0]}`, connection: `good_${user}`, cluster: pg, user });
    secrets.add(good);
    const warm = await psql(`good_${user}`, `good_${user.split('_')[0]}`, good, 'select current_user');
    assert.equal(warm.code, 0, warm.stderr);
    assert.equal(warm.stdout.trim(), user);

    const storedPassword = `Wr0ng-${user}-p4ssw0rd-${Math.random().toString(36).slice(2)}`;
    secrets.add(storedPassword);
    const conn = `bad_${user}`;
    const identity = `bad_${user.split('_')[0]}`;
    const token = await gw.setupPostgres({ identity, connection: conn, cluster: pg, user, password: storedPassword });
    secrets.add(token);
    const beforeIds = await snapshot();

    const r = await psql(conn, identity, token, 'select 1');
    assert.equal(r.code, 2, `psql must fail: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`could not connect to the target of connection "${conn}"`));
    assert.ok(!r.stderr.includes(storedPassword) && !r.stdout.includes(storedPassword), 'stored password in psql output');

    const w = await wire(conn, identity, token);
    assert.equal(w.ready, false);
    assert.equal(w.error?.code, '08006', JSON.stringify(w.error));
    assert.equal(w.error?.severity, 'FATAL');
    assert.ok(!JSON.stringify(w.error?.fields).includes(storedPassword));
    assert.ok(w.closedAfterError);

    const fresh = await newSessions(beforeIds, 2);
    assert.equal(fresh.length, 2, JSON.stringify(fresh));
    for (const s of fresh) {
      assert.match(s.endReason ?? '', /^refused: upstream login failed/);
      assert.equal(s.identity.name, identity);
      assert.equal(s.connection, conn);
      const detail = await gw.cliOk(['sessions', 'show', s.id, '--json']);
      assert.ok(!detail.includes(storedPassword), 'stored password in the recording');
      const { events } = JSON.parse(detail) as { events: EventView[] };
      assert.equal(events.find((e) => e.type === 'access.denied')?.data.code, '08006');
    }

    const listJson = await gw.cliOk(['connection', 'list', '--json']);
    const listText = await gw.cliOk(['connection', 'list']);
    assert.ok(!listJson.includes(storedPassword) && !listText.includes(storedPassword), 'stored password in the API');
    assert.ok(!/"password"/i.test(listJson), 'the API has no password field');
    assert.ok(!gw.logs().includes(storedPassword), 'stored password in the gateway log');
    assert.match(gw.logs(), /upstream login failed/, 'the failure itself is logged for the operator');
    await assertGoodLogin();
  });
}

test('with loopback cleartext disallowed, a token is only accepted over TLS: without TLS → 28000 before any password is asked', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-auth-cfg-'));
  const cfg = path.join(dir, 'gatehouse.yaml');
  writeFileSync(cfg, 'postgres:\n  allow_loopback_cleartext: false\n');
  const g2 = await startTestGateway({ args: ['--config', cfg] });
  try {
    const tok = await g2.setupPostgres({ identity: 'tls_only', connection: 'app', cluster: pg });
    secrets.add(tok);
    const plain = await pgLogin({ host: g2.pgHost, port: g2.pgPort, user: 'tls_only', database: 'app', password: tok, tls: false });
    assert.equal(plain.ready, false);
    assert.equal(plain.error?.code, '28000', JSON.stringify(plain.error));
    assert.match(plain.error?.message ?? '', /only over TLS/);
    assert.match(plain.error?.hint ?? '', /sslmode=require/);
    assert.deepEqual(plain.authRequests, [], 'the gateway must not ask for the token over a cleartext connection');
    const psqlPlain = await run('psql', [g2.dsn('app', 'tls_only').replace('sslmode=require', 'sslmode=disable'), '-w', '-XAtc', 'select 1'],
      { env: cleanEnv({ PGPASSWORD: tok }), timeoutMs: 20_000 });
    assert.equal(psqlPlain.code, 2);
    assert.match(psqlPlain.stderr, /only over TLS/);
    const secure = await pgLogin({ host: g2.pgHost, port: g2.pgPort, user: 'tls_only', database: 'app', password: tok, tls: true });
    assert.equal(secure.ready, true, JSON.stringify(secure.error));
    await secure.close();
    const psqlTls = await run('psql', [g2.dsn('app', 'tls_only'), '-w', '-XAtc', 'select 1'], { env: cleanEnv({ PGPASSWORD: tok }), timeoutMs: 20_000 });
    assert.equal(psqlTls.code, 0, psqlTls.stderr);
    const sessions = JSON.parse(await g2.cliOk(['sessions', 'list', '--json'])) as SessionView[];
    const refused = sessions.filter((x) => x.endReason?.startsWith('refused:'));
    assert.equal(refused.length, 2, 'both cleartext attempts recorded as refused');
    assert.ok(refused.every((x) => /only over TLS/.test(x.endReason!)));
    assert.ok(!g2.logs().includes(tok));
  } finally {
    await g2.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a refused attempt does not disturb a session that is already running', async () => {
  // A long-lived session over the raw client; refusals in between; it still answers.
  const w = await wire('app', 'alice', aliceToken);
  assert.equal(w.ready, true, JSON.stringify(w.error));
  const bad = await wire('app', 'alice', 'ght_' + 'z'.repeat(43));
  assert.equal(bad.error?.code, '28P01');
  const noconn = await wire('nope', 'alice', aliceToken);
  assert.equal(noconn.error?.code, '3D000');
  const msgs = await w.query('select 7 * 6');
  const row = msgs.find((m) => m.type === 'D');
  assert.ok(row, 'a DataRow comes back');
  assert.equal(row.body.toString('utf8', 6), '42');
  await w.close();
});

test('no token, target password or admin token ever appears in the gateway log', async () => {
  const logs = gw.logs();
  assert.ok(logs.length > 0, 'the gateway logged something');
  assert.match(logs, /postgres connection refused/, 'refusals are logged');
  for (const s of secrets) assert.ok(!logs.includes(s), `secret ${s.slice(0, 8)}… found in the gateway log`);
  assert.equal(gw.process.exitCode, null, 'the gateway is still running');
  await assertGoodLogin();
});

test('a failed SCRAM login with a wrong stored password does not stop a correct connection to the same role from logging in', async () => {
  // Re-setting the same password gives scram_user a fresh SCRAM salt, so nothing the gateway
  // derived from earlier logins applies any more.
  await pg.sql("SET password_encryption = 'scram-sha-256'; ALTER ROLE scram_user PASSWORD 'scram-secret';");
  try {
    const wrong = `Wr0ng-again-${Math.random().toString(36).slice(2)}`;
    secrets.add(wrong);
    const badTok = await gw.setupPostgres({ identity: 'poison', connection: 'poison', cluster: pg, user: 'scram_user', password: wrong });
    secrets.add(badTok);
    const bad = await psql('poison', 'poison', badTok, 'select 1');
    assert.equal(bad.code, 2, 'the wrong stored password is refused by the target');
    assert.match(bad.stderr, /could not connect to the target of connection "poison"/);

    // A fresh upstream login (a new application_name means no pooled backend can be reused)
    // through the correctly configured connection must still work.
    const good = await psql('app', 'alice', aliceToken, 'select current_user', `application_name=after-poison-${Date.now()}`);
    assert.equal(good.code, 0, `the correct connection must still log in: ${good.stderr}`);
    assert.equal(good.stdout.trim(), 'scram_user');
  } finally {
    // Fresh salt again, so whatever this test left behind cannot affect anything else.
    await pg.sql("SET password_encryption = 'scram-sha-256'; ALTER ROLE scram_user PASSWORD 'scram-secret';");
  }
});
