// A target the gateway logs in to may be hostile (or an impostor on the path, e.g. in a
// connector's network): it must not be able to freeze the gateway, make it run unbounded work,
// strip TLS, or pick a weaker authentication method and so obtain the stored credential.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { authRequest, startFakeTarget, type FakeTarget } from '../support/fake-pg-target.ts';

let pg: PgCluster;
let gw: TestGateway;
let fake: FakeTarget;
let token: string;
let hostileToken: string;

before(async () => {
  pg = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'bystander', connection: 'real', cluster: pg });
  fake = await startFakeTarget(async (conn) => {
    conn.send('R', authRequest(10, Buffer.from('SCRAM-SHA-256\0\0')));
    const first = await conn.next(); // SASLInitialResponse: mechanism, length, client-first
    const text = first.body.toString('latin1');
    const nonce = /r=([^,\0]+)/.exec(text)![1];
    // 2^31 − 1 rounds of PBKDF2: minutes of CPU, if the gateway obliged.
    conn.send('R', authRequest(11, Buffer.from(`r=${nonce}hostile,s=${Buffer.from('salt').toString('base64')},i=2147483647`)));
    await conn.next().catch(() => undefined);
  });
  hostileToken = await gw.setupPostgres({ identity: 'victim', connection: 'hostile', cluster: { host: fake.host, port: fake.port } as PgCluster, user: 'scram_user', password: 'secret', sslmode: 'disable' });
});

after(async () => {
  await gw?.stop();
  await fake?.close();
  for (const f of downgraders) await f.close();
  await pg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const downgraders: FakeTarget[] = [];
let work = '';
const STORED = 'the-stored-credential';

/** A connection to a fake target that asks for `authCode` (3 cleartext, 5 md5, 0 none at all). */
async function downgrade(name: string, authCode: number, opts: { sslmode?: string; requireAuth?: string } = {}): Promise<{ target: FakeTarget; token: string }> {
  const target = await startFakeTarget(async (conn) => {
    conn.send('R', authRequest(authCode, authCode === 5 ? Buffer.from('salt') : Buffer.alloc(0)));
    if (authCode === 0) { conn.send('Z', Buffer.from('I')); }
    await conn.next().catch(() => undefined);
    conn.end();
  });
  downgraders.push(target);
  const token = await gw.setupPostgres({ identity: `id-${name}`, connection: name, cluster: { host: target.host, port: target.port } as PgCluster,
    user: 'scram_user', password: STORED, sslmode: opts.sslmode ?? 'disable', requireAuth: opts.requireAuth });
  return { target, token };
}

const psql = (connection: string, identity: string, password: string, sql: string) =>
  run('psql', [gw.dsn(connection, identity), '-X', '-c', sql], { env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '20' }, timeoutMs: 30_000 });

test('a target asking for 2^31 SCRAM iterations is refused at once, and the gateway keeps serving others', async () => {
  const started = Date.now();
  const [hostile, other] = await Promise.all([psql('hostile', 'victim', hostileToken, 'select 1'), psql('real', 'bystander', token, 'select 42')]);
  assert.notEqual(hostile.code, 0);
  assert.match(hostile.stderr, /could not connect to the target/);
  assert.ok(Date.now() - started < 10_000, `answered in ${Date.now() - started} ms`);
  assert.equal(other.code, 0, other.stderr);
  assert.match(other.stdout, /42/);
  assert.match(gw.logs(), /SCRAM iterations/);
});

for (const [label, code] of [['cleartext password', 3], ['md5', 5], ['no authentication at all', 0]] as const) {
  test(`a target that asks for ${label} instead of SCRAM gets no credential: the login is refused before anything is sent`, async () => {
    const name = `down-${code}`;
    const { target, token: t } = await downgrade(name, code);
    const r = await psql(name, `id-${name}`, t, 'select 1');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /could not connect to the target/);
    assert.match(r.stderr, /does not allow/);
    assert.equal(target.received.filter((m) => m.type === 'p').length, 0, 'no password message reached the target');
    assert.ok(!JSON.stringify(target.received.map((m) => m.body.toString('latin1'))).includes(STORED));
    assert.match(gw.logs(), new RegExp(`target asks for (password|md5|none) authentication`));
  });
}

test('require-auth md5 allows the md5 exchange the connection opted into', async () => {
  const { target, token: t } = await downgrade('md5-allowed', 5, { requireAuth: 'md5' });
  await psql('md5-allowed', 'id-md5-allowed', t, 'select 1');
  assert.equal(target.received.filter((m) => m.type === 'p').length, 1, 'the md5 answer was sent');
});

test('TLS to the target is required by default: a target that declines it is refused (no plaintext fallback)', async () => {
  const { target, token: t } = await downgrade('no-tls', 10, { sslmode: undefined });
  // setupPostgres passed sslmode disable; a connection with the default must refuse instead.
  await gw.cliOk(['connection', 'add', 'no-tls-default', '--type', 'postgres', '--host', target.host, '--port', String(target.port),
    '--database', 'app', '--user', 'scram_user', '--password-env', 'P'], { env: { P: STORED } });
  await gw.cliOk(['grant', 'id-no-tls', 'no-tls-default']);
  const r = await psql('no-tls-default', 'id-no-tls', t, 'select 1');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /does not accept TLS/);
  assert.equal(target.received.length, 0, 'nothing but the SSLRequest was sent');
});

test('verify-full against the real target with its CA works; with another CA it is refused', async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-ca-'));
  const good = path.join(work, 'good.pem');
  writeFileSync(good, pg.caPem);
  const other = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(work, 'k.pem'),
    '-out', path.join(work, 'other.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { timeoutMs: 30_000 });
  assert.equal(other.code, 0, other.stderr);
  for (const [name, ca] of [['verified', good], ['wrong-ca', path.join(work, 'other.pem')]] as const) {
    await gw.cliOk(['connection', 'add', name, '--type', 'postgres', '--host', pg.host, '--port', String(pg.port), '--database', 'app',
      '--user', 'scram_user', '--password-env', 'P', '--sslrootcert', ca], { env: { P: 'scram-secret' } });
    await gw.cliOk(['grant', 'bystander', name]);
  }
  const ok = await psql('verified', 'bystander', token, 'select ssl from pg_stat_ssl where pid = pg_backend_pid()');
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^\s*t\s*$/m, 'the session to the target is encrypted');
  const bad = await psql('wrong-ca', 'bystander', token, 'select 1');
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /certificate failed verification/);
});
