// Groups and access end to end: a real gateway and a throwaway PostgreSQL. Group grants let
// members connect (and stop when the membership goes); auditors read the recordings of their
// connections and nothing else, and cannot connect; connect-only identities read no recordings;
// management needs admin; `gatehouse access check` explains each decision; a run identity's
// trust-policy groups grant through a group.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { pgLogin } from '../support/pg-login.ts';
import { run, type RunResult } from '../support/processes.ts';
import type { SessionView } from '../../src/cli/format.ts';

let pg: PgCluster;
let gw: TestGateway;
let work: string;
let issuer: Server;
let issuerUrl: string;
let signingKey: CryptoKey;

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-access-'));
  // A local OIDC issuer: one key, served as a JWKS.
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  signingKey = privateKey;
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  issuer = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })));
  await new Promise<void>((resolve) => issuer.listen(0, '127.0.0.1', resolve));
  issuerUrl = `http://127.0.0.1:${(issuer.address() as { port: number }).port}`;
  const config = path.join(work, 'gatehouse.yaml');
  writeFileSync(config, `
workload_identity:
  policies:
    - name: ci
      issuer: ${issuerUrl}
      kind: github
      jwks_url: ${issuerUrl}/jwks
      audience: gatehouse
      claims: { repository: org/app }
      groups: [readers]
      identity_name: "run-{run_id}"
`);
  [pg, gw] = await Promise.all([startPgCluster(), startTestGateway({ args: ['--config', config] })]);
  for (const [name, user, password] of [['db1', 'scram_user', 'scram-secret'], ['db2', 'trust_user', undefined]] as const) {
    await gw.cliOk(['connection', 'add', name, '--type', 'postgres', '--host', pg.host, '--port', String(pg.port), '--database', 'app', '--user', user,
      ...(password ? ['--password-env', 'PW'] : [])], { env: { PW: password } });
  }
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  issuer?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

// ---- helpers ---------------------------------------------------------------------------------

const tokens = new Map<string, string>();

async function identityWithToken(name: string, kind = 'human'): Promise<string> {
  await gw.cliOk(['identity', 'add', name, '--kind', kind]);
  const token = (await gw.cliOk(['token', 'issue', name])).trim().split('\n').pop()!;
  tokens.set(name, token);
  return token;
}

function psql(connection: string, identity: string, sql = 'select 1'): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return run('psql', [gw.dsn(connection, identity), '-w', '-XAt', '-c', sql], { env: { ...env, PGPASSWORD: tokens.get(identity), PGCONNECT_TIMEOUT: '10' }, timeoutMs: 20_000 });
}

/** The SQLSTATE and message the gateway refuses a login with (psql does not print the SQLSTATE). */
async function refusal(connection: string, identity: string): Promise<{ code?: string; message?: string }> {
  const s = await pgLogin({ host: gw.pgHost, port: gw.pgPort, user: identity, database: connection, password: tokens.get(identity), tls: true });
  await s.close();
  return { code: s.error?.code, message: s.error?.message };
}

async function api(identity: string, method: string, p: string, body?: unknown): Promise<{ status: number; body: { error?: string } & Record<string, unknown> }> {
  const res = await fetch(`${gw.url}${p}`, {
    method, headers: { authorization: `Bearer ${tokens.get(identity)}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json() as { error?: string } & Record<string, unknown> };
}

/** The newest ended session of an identity that was let through, as the admin sees it. */
async function servedSession(identity: string): Promise<SessionView> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const list = JSON.parse(await gw.cliOk(['sessions', 'list', '--identity', identity, '--json'])) as SessionView[];
    const served = list.find((s) => !s.endReason?.startsWith('refused:'));
    if (served?.endedAt || Date.now() > deadline) return served!;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- the tests -------------------------------------------------------------------------------

test('a group grant lets members connect with psql; without the membership: 28000', async () => {
  await identityWithToken('dana');
  assert.match(await gw.cliOk(['group', 'add', 'devs']), /group devs created/);
  assert.match(await gw.cliOk(['grant', 'group:devs', 'db1']), /^granted group:devs access to db1$/m);
  assert.deepEqual(await refusal('db1', 'dana'), { code: '28000', message: 'identity "dana" has no grant on connection "db1"' }, 'not a member yet');

  assert.match(await gw.cliOk(['group', 'member', 'add', 'devs', 'dana']), /dana added to group devs/);
  const ok = await psql('db1', 'dana', 'select current_user');
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.trim(), 'scram_user');
  assert.equal((await psql('db2', 'dana')).code, 2, 'the group has no grant on db2');

  assert.match(await gw.cliOk(['group', 'member', 'rm', 'devs', 'dana']), /dana removed from group devs/);
  assert.deepEqual(await refusal('db1', 'dana'), { code: '28000', message: 'identity "dana" has no grant on connection "db1"' });
  const list = JSON.parse(await gw.cliOk(['group', 'list', '--json'])) as Array<{ name: string; members: string[] }>;
  assert.deepEqual(list.map((g) => [g.name, g.members]), [['devs', []]]);
  await gw.cliOk(['group', 'member', 'add', 'devs', 'dana']); // for the tests below
});

test('an auditor reads the recordings of its connection (list, show, export) but not others\', and cannot connect', async () => {
  const danaSession = await servedSession('dana');
  assert.equal(danaSession.connection, 'db1');
  await identityWithToken('olga', 'service');
  await gw.cliOk(['grant', 'olga', 'db2']);
  assert.equal((await psql('db2', 'olga')).code, 0);
  const olgaSession = await servedSession('olga');

  await identityWithToken('aude');
  await gw.cliOk(['group', 'add', 'auditors']);
  await gw.cliOk(['group', 'member', 'add', 'auditors', 'aude']);
  assert.match(await gw.cliOk(['grant', 'group:auditors', 'db1', '--action', 'audit']), /^granted group:auditors audit on db1$/m);
  const as = { token: tokens.get('aude') };

  const listed = JSON.parse(await gw.cliOk(['sessions', 'list', '--json'], as)) as SessionView[];
  assert.ok(listed.some((s) => s.id === danaSession.id), 'db1 sessions are listed');
  assert.ok(listed.length > 0 && listed.every((s) => s.connection === 'db1'), `only db1 sessions: ${listed.map((s) => s.connection)}`);
  assert.deepEqual(JSON.parse(await gw.cliOk(['sessions', 'list', '--connection', 'db2', '--json'], as)), []);
  assert.match(await gw.cliOk(['sessions', 'show', danaSession.id], as), /select current_user/);
  const out = path.join(work, 'bundle');
  assert.match(await gw.cliOk(['sessions', 'export', danaSession.id, '--out', out], as), /exported session/);
  assert.equal((await gw.cli(['verify', out])).code, 0, 'the exported bundle verifies');

  const other = await gw.cli(['sessions', 'show', olgaSession.id], as);
  assert.equal(other.code, 1);
  assert.match(other.stderr, new RegExp(`may not read session "${olgaSession.id}": identity aude has no audit or admin grant on connection db2, directly or through groups \\[auditors\\]`));
  assert.equal((await api('aude', 'GET', `/api/v1/sessions/${olgaSession.id}/evidence`)).status, 403, 'nor export it');
  assert.equal((await api('aude', 'POST', `/api/v1/sessions/${danaSession.id}/hold`, { hold: true })).status, 403, 'legal hold is management');
  assert.equal((await api('aude', 'GET', '/api/v1/sessions/s_doesnotexist')).status, 404);

  const refused = await psql('db1', 'aude');
  assert.equal(refused.code, 2, 'audit does not include connect');
  assert.match(refused.stderr, /identity "aude" has no grant on connection "db1"/);
  assert.equal((await refusal('db1', 'aude')).code, '28000');
  const seen = JSON.parse(await gw.cliOk(['sessions', 'list', '--identity', 'aude', '--json'], as)) as SessionView[];
  assert.ok(seen.length >= 2 && seen.every((s) => s.endReason?.startsWith('refused:')), 'its refused attempts on db1 are recordings it may read');
});

test('connect-only identities read no recordings; non-administrators get 403 on management routes', async () => {
  const danaSession = await servedSession('dana');
  const show = await api('dana', 'GET', `/api/v1/sessions/${danaSession.id}`);
  assert.equal(show.status, 403, 'not even its own session');
  assert.match(show.body.error!, /identity "dana" is not an administrator and has no audit grant/);
  assert.equal((await api('dana', 'GET', '/api/v1/sessions')).status, 403);
  assert.equal((await api('dana', 'GET', `/api/v1/sessions/${danaSession.id}/evidence`)).status, 403);
  for (const as of ['dana', 'aude']) {
    for (const [method, p, body] of [
      ['GET', '/api/v1/identities'], ['GET', '/api/v1/connections'], ['GET', '/api/v1/grants'], ['GET', '/api/v1/groups'], ['GET', '/api/v1/tokens'],
      ['POST', '/api/v1/groups', { name: 'sneaky' }], ['POST', '/api/v1/grants', { identity: as, connection: '*', action: 'admin' }],
      ['POST', '/api/v1/groups/devs/members', { identity: as }], ['GET', '/api/v1/access/check?identity=dana&connection=db1'], ['POST', '/api/v1/retention/run', {}],
    ] as Array<[string, string, unknown?]>) {
      const r = await api(as, method, p, body);
      assert.equal(r.status, 403, `${as}: ${method} ${p}`);
      assert.match(r.body.error!, new RegExp(`identity "${as}" is not an administrator: identity ${as} has no admin grant on every connection \\(\\*\\)`));
    }
  }
  assert.deepEqual((await api('dana', 'GET', '/api/v1/whoami')).body, { name: 'dana', kind: 'human', admin: false });
});

test('admin on every connection, through a group, makes a gateway administrator (not a client of the targets)', async () => {
  await identityWithToken('root2');
  await gw.cliOk(['group', 'add', 'admins']);
  await gw.cliOk(['group', 'member', 'add', 'admins', 'root2']);
  assert.match(await gw.cliOk(['grant', 'group:admins', '*', '--action', 'admin']), /^granted group:admins admin on every connection \(\*\)$/m);
  assert.deepEqual((await api('root2', 'GET', '/api/v1/whoami')).body, { name: 'root2', kind: 'human', admin: true });
  const identities = JSON.parse(await gw.cliOk(['identity', 'list', '--json'], { token: tokens.get('root2') })) as Array<{ name: string; admin: boolean; groups?: string[] }>;
  assert.deepEqual(identities.find((i) => i.name === 'root2'), { ...identities.find((i) => i.name === 'root2'), admin: true, groups: ['admins'] });
  assert.equal(identities.find((i) => i.name === 'dana')?.admin, false);
  assert.ok((JSON.parse(await gw.cliOk(['sessions', 'list', '--json'], { token: tokens.get('root2') })) as SessionView[]).some((s) => s.connection === 'db2'), 'admin includes audit everywhere');
  assert.equal((await psql('db1', 'root2')).code, 2, 'admin does not include connect');
});

test('access check: allowed through a group, allowed directly, denied (exit 1), and the administrator', async () => {
  const viaGroup = await gw.cli(['access', 'check', 'dana', 'db1']);
  assert.equal(viaGroup.code, 0, viaGroup.stderr);
  assert.match(viaGroup.stdout, /^allowed: identity dana may connect on connection db1: grant grant_\w+ gives connect on db1 through group devs$/m);
  assert.match(viaGroup.stdout, /^via: +group:devs has connect on db1 \(grant grant_\w+\)$/m);
  assert.match(viaGroup.stdout, /^groups: +devs$/m);

  const direct = await gw.cli(['access', 'check', 'olga', 'db2']);
  assert.equal(direct.code, 0);
  assert.match(direct.stdout, /^via: +olga has connect on db2 /m);

  const denied = await gw.cli(['access', 'check', 'aude', 'db1']);
  assert.equal(denied.code, 1, 'denied: exit status 1');
  assert.equal(denied.stdout.split('\n')[0],
    'denied: identity aude has no connect grant on connection db1, directly or through groups [auditors]; it has audit there, which does not include connect');
  const audit = JSON.parse(await gw.cliOk(['access', 'check', 'aude', 'db1', '--action', 'audit', '--json'])) as { allowed: boolean; via: Record<string, string> };
  assert.equal(audit.allowed, true);
  assert.deepEqual({ ...audit.via, grant: '' }, { grant: '', subject: 'group:auditors', action: 'audit', connection: 'db1' });

  const admin = await gw.cli(['access', 'check', 'admin', '*', '--action', 'admin']);
  assert.equal(admin.code, 0);
  assert.match(admin.stdout, /^allowed: identity admin may admin on every connection \(\*\): it is the gateway's bootstrap administrator$/m);
  const delegated = await gw.cliOk(['access', 'check', 'root2', '*', '--action', 'admin']);
  assert.match(delegated, /^via: +group:admins has admin on \* /m);

  const unknown = await gw.cli(['access', 'check', 'nobody', 'db1']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /identity "nobody" does not exist/);
  assert.match((await gw.cli(['access', 'check', 'dana', 'db1', '--action', 'own'])).stderr, /invalid --action "own": use one of connect, approve, audit, admin/);
});

test('grants lists identities\' and groups\' grants; revoke by subject and action; a removed group takes its grants', async () => {
  const text = await gw.cliOk(['grants']);
  assert.match(text, /^SUBJECT\s+TYPE\s+ACTION\s+CONNECTION\s+SINCE$/m);
  assert.match(text, /^olga\s+identity\s+connect\s+db2\s/m);
  assert.match(text, /^group:admins\s+group\s+admin\s+\*\s/m);
  assert.match(text, /^group:auditors\s+group\s+audit\s+db1\s/m);
  const json = JSON.parse(await gw.cliOk(['grants', '--json'])) as Array<Record<string, string>>;
  assert.ok(json.some((g) => g.subject === 'group:devs' && g.group === 'devs' && g.subjectType === 'group' && g.action === 'connect' && g.connection === 'db1'));
  assert.ok(json.some((g) => g.subject === 'olga' && g.identity === 'olga'));

  const notThere = await gw.cli(['revoke', 'group:auditors', 'db1']);
  assert.equal(notThere.code, 1);
  assert.match(notThere.stderr, /group "auditors" has no grant to connect on connection "db1"/);
  assert.match(await gw.cliOk(['revoke', 'group:auditors', 'db1', '--action', 'audit']), /^revoked group:auditors's audit on db1$/m);
  assert.equal((await api('aude', 'GET', '/api/v1/sessions')).status, 403, 'the auditor reads nothing now');
  assert.match((await gw.cli(['grant', 'group:nope', 'db1'])).stderr, /group "nope" does not exist/);

  assert.match(await gw.cliOk(['group', 'rm', 'devs']), /group devs deleted/);
  assert.ok(!(JSON.parse(await gw.cliOk(['grants', '--json'])) as Array<Record<string, string>>).some((g) => g.subject === 'group:devs'));
  assert.equal((await refusal('db1', 'dana')).code, '28000');
});

test("a run identity's trust-policy groups grant through a group of that name", async () => {
  await gw.cliOk(['group', 'add', 'readers']);
  await gw.cliOk(['grant', 'group:readers', 'db2']);
  const now = Math.floor(Date.now() / 1000);
  const oidc = await new SignJWT({ iss: issuerUrl, aud: 'gatehouse', sub: 'repo:org/app', repository: 'org/app', run_id: '77', iat: now, exp: now + 300 })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(signingKey);
  const res = await fetch(`${gw.url}/api/v1/auth/oidc-token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: oidc }) });
  assert.equal(res.status, 201);
  const out = await res.json() as { token: string; identity: { name: string; groups: string[]; externalGroups: string[] }; granted: string[] };
  assert.deepEqual([out.identity.groups, out.identity.externalGroups, out.granted], [['readers'], ['readers'], []]);
  tokens.set(out.identity.name, out.token);

  const ok = await psql('db2', out.identity.name, 'select current_user');
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.trim(), 'trust_user');
  assert.equal((await refusal('db1', out.identity.name)).code, '28000', 'the group has no grant on db1');
  const check = await gw.cliOk(['access', 'check', out.identity.name, 'db2']);
  assert.match(check, /through group readers$/m);
  assert.match(check, /^groups: +readers \(external\)$/m);
});
