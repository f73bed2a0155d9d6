// Workload identity end to end: a local OIDC issuer (jose keys, JWKS over HTTP, key rotation), a
// real gateway whose gatehouse.yaml trusts it, `gatehouse login` exchanging tokens (given, from a
// simulated GitHub Actions token endpoint, from a GitLab-style environment variable), psql through
// the gateway as the run identity, and the attribution of the recorded sessions.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';

// ---- a local OIDC issuer ---------------------------------------------------------------------

interface SigningKey { kid: string; privateKey: CryptoKey; publicKey: CryptoKey; jwk: JWK }

async function newKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  return { kid, privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

/** One issuer under a path prefix of the shared server; `discovery: false` serves only /.well-known/jwks. */
class LocalIssuer {
  readonly prefix: string;
  readonly discovery: boolean;
  url = '';
  key!: SigningKey;
  jwksFetches = 0;
  private generation = 0;

  constructor(prefix: string, discovery: boolean) {
    this.prefix = prefix;
    this.discovery = discovery;
  }

  async init(origin: string): Promise<void> {
    this.url = `${origin}${this.prefix}`;
    await this.rotate();
  }

  /** A new key with a new kid; the old one is no longer published (a hard rotation). */
  async rotate(): Promise<void> {
    this.key = await newKey(`${this.prefix.slice(1)}-key-${++this.generation}`);
  }

  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const p = new URL(req.url!, 'http://x').pathname;
    if (this.discovery && p === `${this.prefix}/.well-known/openid-configuration`) {
      json(res, 200, { issuer: this.url, jwks_uri: `${this.url}/keys`, id_token_signing_alg_values_supported: ['RS256'] });
      return true;
    }
    if (p === (this.discovery ? `${this.prefix}/keys` : `${this.prefix}/.well-known/jwks`)) {
      this.jwksFetches++;
      json(res, 200, { keys: [this.key.jwk] });
      return true;
    }
    return false;
  }

  /** Signs `claims` (iss, aud, iat, exp filled in unless given) with the current key. */
  sign(claims: Record<string, unknown>, o: { kid?: string; key?: CryptoKey; expiresIn?: number } = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const payload = { iss: this.url, aud: 'gatehouse', iat: now, nbf: now - 5, exp: now + (o.expiresIn ?? 600), jti: randomUUID(), ...claims };
    return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: o.kid ?? this.key.kid }).sign(o.key ?? this.key.privateKey);
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

// ---- fixtures --------------------------------------------------------------------------------

const github = new LocalIssuer('/github', true);
const gitlab = new LocalIssuer('/gitlab', false);
/** What the simulated GitHub Actions token endpoint was asked. */
const ghaRequests: Array<{ authorization?: string; audience: string | null }> = [];
let server: Server;
let pg: PgCluster;
let gw: TestGateway;
let work: string;
/** Every OIDC and gatehouse token of the run: none may show up in the gateway's log. */
const secrets: string[] = [];

function githubClaims(o: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    sub: 'repo:org/app:ref:refs/heads/main', repository: 'org/app', repository_owner: 'org', repository_owner_id: '42', repository_id: '4242',
    ref: 'refs/heads/main', ref_type: 'branch', sha: 'd6e3f1c0a5b2', workflow: 'deploy', event_name: 'push', actor: 'octocat',
    workflow_ref: 'org/app/.github/workflows/deploy.yml@refs/heads/main', run_id: '101', run_number: '7', run_attempt: '1', ...o,
  };
}

function gitlabClaims(o: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    aud: 'https://gatehouse.example', sub: 'project_path:group/app:ref_type:branch:ref:main', namespace_path: 'group', project_id: '77',
    project_path: 'group/app', pipeline_id: '9001', job_id: '31337', ref: 'main', ref_type: 'branch', ref_protected: 'true', user_login: 'dev', ...o,
  };
}

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-workload-'));
  server = createServer((req, res) => {
    if (github.handle(req, res) || gitlab.handle(req, res)) return;
    const url = new URL(req.url!, 'http://x');
    if (url.pathname === '/gha/token') {
      // GitHub Actions' ID token endpoint: the job's request token as bearer, audience in the query.
      ghaRequests.push({ authorization: req.headers.authorization, audience: url.searchParams.get('audience') });
      if (req.headers.authorization !== 'Bearer gha-request-token' || url.searchParams.get('api-version') !== '2.0') return json(res, 401, { message: 'bad request token' });
      void github.sign(githubClaims({ aud: url.searchParams.get('audience'), run_id: '555' })).then((value) => json(res, 200, { count: 1, value }));
      return;
    }
    json(res, 404, { error: 'not found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  await github.init(origin);
  await gitlab.init(origin);

  const config = path.join(work, 'gatehouse.yaml');
  writeFileSync(config, `
workload_identity:
  jwks_refetch_interval: 1s
  policies:
    - name: github-app
      issuer: ${github.url}
      kind: github
      audience: gatehouse
      claims:
        repository: org/app
        repository_owner_id: "42"
        ref: refs/heads/*
        workflow_ref: "org/app/.github/workflows/*@refs/heads/*"
      grants: [app, missing-connection]
      groups: [ci-deployers]
      max_ttl: 15m
      identity_name: "gh-{repository}-{run_id}-{run_attempt}"
    - name: gitlab-app
      issuer: ${gitlab.url}
      kind: gitlab
      audience: https://gatehouse.example
      claims:
        project_path: group/app
        ref_protected: true
      grants: [app]
      max_ttl: 10m
      identity_name: "gl-{project_path}-{pipeline_id}"
    - name: unreachable
      issuer: http://127.0.0.1:1/down
      kind: github
      audience: gatehouse
      claims: { repository: org/app }
`);
  [pg, gw] = await Promise.all([startPgCluster(), startTestGateway({ args: ['--config', config] })]);
  await gw.cliOk(['connection', 'add', 'app', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port), '--database', 'app',
    '--user', 'scram_user', '--password-env', 'TARGET_PASSWORD'], { env: { TARGET_PASSWORD: 'scram-secret' } });
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  server?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

interface Exchanged { token: string; identity: { name: string; kind: string; claims: Record<string, string>; authSource: string; groups?: string[] }; expiresAt: string; policy: string; granted: string[] }

async function exchange(oidcToken: string): Promise<Exchanged> {
  secrets.push(oidcToken);
  const out = JSON.parse(await gw.cliOk(['login', '--oidc-token', oidcToken, '--json'])) as Exchanged;
  secrets.push(out.token);
  return out;
}

/** POST /api/v1/auth/oidc-token directly (no CLI, no bearer token). */
async function apiExchange(oidcToken: string | undefined): Promise<{ status: number; body: Record<string, unknown> }> {
  if (oidcToken) secrets.push(oidcToken);
  const res = await fetch(`${gw.url}/api/v1/auth/oidc-token`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(oidcToken === undefined ? {} : { token: oidcToken }),
  });
  return { status: res.status, body: await res.json() as Record<string, unknown> };
}

/** Environment without any CI platform's variables (the suite itself may run in CI). */
const NO_CI: NodeJS.ProcessEnv = {
  GITHUB_ACTIONS: '', GITLAB_CI: '', ACTIONS_ID_TOKEN_REQUEST_URL: '', ACTIONS_ID_TOKEN_REQUEST_TOKEN: '', GATEHOUSE_ID_TOKEN: '', CI_JOB_JWT_V2: '',
};

/** `gatehouse login --oidc-token T` must fail; returns what it printed on stderr. */
async function refused(oidcToken: string): Promise<string> {
  secrets.push(oidcToken);
  const r = await gw.cli(['login', '--oidc-token', oidcToken]);
  assert.equal(r.code, 1, `expected a refusal, got: ${r.stdout}${r.stderr}`);
  assert.equal(r.stdout, '', 'no token is printed');
  return r.stderr.trim();
}

async function psql(user: string, token: string, sql: string): Promise<string> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  const r = await run('psql', [gw.dsn('app', user), '-XAtc', sql], { env: { ...env, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' }, timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

interface SessionOut { id: string; identity: { name: string; kind: string; claims: Record<string, string> | null }; authMethod: string | null; endedAt: string | null }

async function sessions(...args: string[]): Promise<SessionOut[]> {
  return JSON.parse(await gw.cliOk(['sessions', 'list', '--json', ...args])) as SessionOut[];
}

/** The sessions of `identity`, once they have all ended (a session ends just after psql exits). */
async function endedSessionsOf(identity: string, count: number): Promise<SessionOut[]> {
  let rows: SessionOut[] = [];
  for (let i = 0; i < 100; i++) {
    rows = await sessions('--identity', identity);
    if (rows.length === count && rows.every((s) => s.endedAt !== null)) return rows;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`sessions of ${identity}: ${JSON.stringify(rows)}`);
}

// ---- the tests -------------------------------------------------------------------------------

test('a GitHub-like run exchanges its token, connects with psql as its own identity, and the session carries kind, auth method and claims', async () => {
  const r = await gw.cli(['login', '--oidc-token', await github.sign(githubClaims())]);
  assert.equal(r.code, 0, r.stderr);
  const token = r.stdout.trim().split('\n').pop()!;
  secrets.push(token);
  assert.match(token, /^ght_/);
  const name = /signed in as (\S+) \(agent\) by policy "github-app" until \S+; may connect to app\n/.exec(r.stderr)?.[1];
  assert.ok(name, r.stderr);
  assert.match(name, /^gh-org-app-101-1-[a-z0-9]{6}$/);
  assert.match(r.stderr, /export GATEHOUSE_TOKEN=/);
  assert.ok(!r.stderr.includes(token), 'the token is printed on stdout only');

  const identities = JSON.parse(await gw.cliOk(['identity', 'list', '--json'])) as Array<{ name: string; kind: string; authSource?: string; groups?: string[]; claims?: Record<string, string> }>;
  const me = identities.find((i) => i.name === name)!;
  assert.equal(me.kind, 'agent');
  assert.equal(me.authSource, 'oidc-exchange:github-app');
  assert.deepEqual(me.groups, ['ci-deployers']);
  assert.equal(me.claims?.repository, 'org/app');
  assert.equal(me.claims?.iss, github.url);
  assert.equal(me.claims?.aud, 'gatehouse');
  assert.equal(me.claims?.exp, undefined, 'timing claims are not kept');
  assert.match(gw.logs(), /"connection":"missing-connection"[^\n]*"msg":"trust policy grants a connection that does not exist"/);

  assert.equal(await psql(name, token, 'select 40 + 2'), '42');
  const [s] = await endedSessionsOf(name, 1);
  assert.equal(s.identity.kind, 'agent');
  assert.equal(s.authMethod, 'token');
  assert.equal(s.identity.claims?.repository, 'org/app');
  assert.equal(s.identity.claims?.run_id, '101');
  assert.equal(s.identity.claims?.workflow_ref, 'org/app/.github/workflows/deploy.yml@refs/heads/main');
  assert.equal(s.identity.claims?.sub, 'repo:org/app:ref:refs/heads/main');

  // The claims are in the signed session.start event too, and `sessions show` prints them.
  const detail = JSON.parse(await gw.cliOk(['sessions', 'show', s.id, '--json'])) as { events: Array<{ type: string; data: Record<string, unknown> }> };
  const start = detail.events.find((e) => e.type === 'session.start')!.data as { identity: { claims: Record<string, string> }; authMethod: string };
  assert.equal(start.authMethod, 'token');
  assert.deepEqual(start.identity.claims, s.identity.claims);
  const show = await gw.cliOk(['sessions', 'show', s.id]);
  assert.match(show, new RegExp(`identity\\s+${name} \\(agent\\)\\nauth\\s+token\\nclaims\\s+actor=octocat\\n`));
  assert.match(show, /^\s+repository=org\/app$/m);
  assert.match(show, /^\s+run_id=101$/m);

  // Recordings keep the claims after the run identity is removed.
  await gw.cliOk(['identity', 'rm', name]);
  const [kept] = await sessions('--identity', name);
  assert.equal(kept.identity.claims?.repository, 'org/app');
  assert.equal(kept.authMethod, 'token');
});

test('two runs are two identities; sessions list separates them by claim, and by kind', async () => {
  const run1 = await exchange(await github.sign(githubClaims({ run_id: '201' })));
  const run2 = await exchange(await github.sign(githubClaims({ run_id: '202' })));
  const run2again = await exchange(await github.sign(githubClaims({ run_id: '202' })));
  const names = [run1, run2, run2again].map((x) => x.identity.name);
  assert.equal(new Set(names).size, 3, `every exchange is an identity of its own: ${names.join(', ')}`);
  assert.match(run1.identity.name, /^gh-org-app-201-1-/);
  for (const x of [run1, run2]) await psql(x.identity.name, x.token, 'select 1');
  await psql(run1.identity.name, run1.token, 'select 2');
  await endedSessionsOf(run1.identity.name, 2);
  await endedSessionsOf(run2.identity.name, 1);

  const of201 = await sessions('--claim', 'run_id=201');
  assert.deepEqual(of201.map((s) => s.identity.name), [run1.identity.name, run1.identity.name]);
  const of202 = await sessions('--claim', 'run_id=202', '--claim', 'repository=org/app', '--kind', 'agent');
  assert.deepEqual(of202.map((s) => s.identity.name), [run2.identity.name]);
  assert.deepEqual(await sessions('--claim', 'run_id=202', '--kind', 'human'), []);
  assert.deepEqual((await sessions('--claim', 'run_id=201', '--limit', '1')).map((s) => s.identity.name), [run1.identity.name], 'the limit counts matching sessions');
  const bad = await gw.cli(['sessions', 'list', '--claim', 'run_id']);
  assert.match(bad.stderr, /invalid --claim "run_id": use NAME=VALUE/);
  const badKind = await gw.cli(['sessions', 'list', '--kind', 'robot']);
  assert.match(badKind.stderr, /kind must be one of: human, service, agent, unknown/);
});

test('refusals: alg none, HMAC with the public key, expired, not yet valid, no iat or iat in the future, wrong audience, unknown issuer, claims outside every policy, bad signature', async () => {
  const now = Math.floor(Date.now() / 1000);
  const prefix = 'gatehouse: OIDC token refused: ';
  const claims = { iss: github.url, aud: 'gatehouse', iat: now, exp: now + 600, ...githubClaims() };

  const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
  assert.equal(await refused(unsigned), `${prefix}algorithm "none" is not allowed`);

  // The classic confusion: the issuer's public key (PEM text) used as an HMAC secret.
  const pem = new TextEncoder().encode(await exportSPKI(github.key.publicKey));
  const hmac = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: github.key.kid }).sign(pem);
  assert.equal(await refused(hmac), `${prefix}algorithm HS256 is not allowed (symmetric algorithms are never accepted)`);

  const expiredAt = now - 3600;
  assert.equal(await refused(await github.sign(githubClaims({ iat: now - 7200, nbf: now - 7200, exp: expiredAt }))),
    `${prefix}token expired at ${new Date(expiredAt * 1000).toISOString()}`);

  const validFrom = now + 3600;
  assert.equal(await refused(await github.sign(githubClaims({ nbf: validFrom, exp: now + 7200 }))),
    `${prefix}token not valid before ${new Date(validFrom * 1000).toISOString()}`);

  // iat is required, and may not lie in the future beyond the clock skew (30 s in this gateway's config).
  assert.equal(await refused(await github.sign(githubClaims({ iat: undefined }))), `${prefix}the token has no valid issue time (iat)`);
  assert.equal(await refused(await github.sign(githubClaims({ iat: String(now) }))), `${prefix}the token has no valid issue time (iat)`);
  const issuedLater = now + 3600;
  assert.equal(await refused(await github.sign(githubClaims({ iat: issuedLater, exp: now + 7200 }))),
    `${prefix}token issued in the future (iat ${new Date(issuedLater * 1000).toISOString()})`);
  assert.equal((await exchange(await github.sign(githubClaims({ iat: now + 10 })))).policy, 'github-app', 'an iat within the skew is accepted');

  assert.equal(await refused(await github.sign(githubClaims({ aud: 'someone-else' }))),
    `${prefix}audience "someone-else" is not accepted by policy "github-app"`);

  assert.equal(await refused(await github.sign(githubClaims({ iss: 'https://evil.example' }))),
    `${prefix}issuer "https://evil.example" is not trusted`);

  assert.equal(await refused(await github.sign(githubClaims({ repository: 'org/other' }))),
    `${prefix}no trust policy matches: policy "github-app": claim repository is "org/other", expected "org/app"`);
  assert.equal(await refused(await github.sign(githubClaims({ ref: 'refs/heads/feature/x', repository_owner_id: undefined }))),
    `${prefix}no trust policy matches: policy "github-app": claim repository_owner_id is missing, expected "42", claim ref is "refs/heads/feature/x", expected "refs/heads/*"`);

  // Signed by a key the issuer never published, under the current key's id.
  const forger = await newKey(github.key.kid);
  assert.equal(await refused(await github.sign(githubClaims(), { key: forger.privateKey })), `${prefix}signature verification failed`);

  assert.equal(await refused('not-a-jwt'), `${prefix}not a JWT (expected three dot-separated parts)`);

  // An issuer whose keys cannot be fetched: not a refusal of the token, a reason to retry (503).
  const down = await apiExchange(await github.sign(githubClaims({ iss: 'http://127.0.0.1:1/down' })));
  assert.equal(down.status, 503);
  assert.match(String(down.body.error),
    /^OIDC token not checked: cannot fetch the signing keys of issuer "http:\/\/127\.0\.0\.1:1\/down": http:\/\/127\.0\.0\.1:1\/down\/\.well-known\/openid-configuration: \S+/);

  // The API itself: 401 with { error }, and no bearer token needed.
  assert.deepEqual(await apiExchange(unsigned), { status: 401, body: { error: 'OIDC token refused: algorithm "none" is not allowed' } });
  assert.equal((await apiExchange(undefined)).status, 400);
});

test('key rotation: a token under a new kid makes the gateway refetch the JWKS; made-up kids are rate limited', async () => {
  // Signing keys are cached: exchanges under a known kid fetch nothing.
  await exchange(await github.sign(githubClaims()));
  const fetchesBefore = github.jwksFetches;
  await exchange(await github.sign(githubClaims()));
  assert.equal(github.jwksFetches, fetchesBefore, 'cached keys');

  await new Promise((r) => setTimeout(r, 1100)); // past the refetch interval (1 s in this configuration)
  const prefix = 'gatehouse: OIDC token refused: ';
  assert.equal(await refused(await github.sign(githubClaims(), { kid: 'made-up-1' })),
    `${prefix}no signing key "made-up-1" for RS256 in the JWKS of issuer "${github.url}"`);
  assert.equal(github.jwksFetches, fetchesBefore + 1, 'an unknown kid refetches once');
  // Straight at the API, to stay well within the interval.
  const madeUp = await Promise.all(['made-up-2', 'made-up-3', 'made-up-4'].map(async (kid) => apiExchange(await github.sign(githubClaims(), { kid }))));
  assert.deepEqual(madeUp.map((x) => x.status), [401, 401, 401]);
  assert.equal(github.jwksFetches, fetchesBefore + 1, 'within the interval, unknown kids do not refetch');

  const oldKid = github.key.kid;
  await github.rotate();
  await new Promise((r) => setTimeout(r, 1100));
  const rotated = await exchange(await github.sign(githubClaims({ run_id: '301' })));
  assert.equal(rotated.identity.claims.run_id, '301');
  assert.equal(github.jwksFetches, fetchesBefore + 2, 'the new kid was fetched');
  assert.match(gw.logs(), new RegExp(`"reason":"unknown key \\\\"${github.key.kid}\\\\""[^\\n]*"msg":"fetched an issuer's signing keys"`));
  // The old key is gone from the JWKS: its tokens are refused now (once the interval allows a refetch).
  const old = await newKey(oldKid);
  await new Promise((r) => setTimeout(r, 1100));
  assert.match(await refused(await github.sign(githubClaims(), { key: old.privateKey, kid: oldKid })), new RegExp(`no signing key "${oldKid}"`));
});

test('GitHub Actions: without --oidc-token, login asks the job\'s ID token endpoint for the gatehouse audience', async () => {
  const env = {
    GITHUB_ACTIONS: 'true', ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'gha-request-token',
    ACTIONS_ID_TOKEN_REQUEST_URL: `${new URL(github.url).origin}/gha/token?api-version=2.0`,
  };
  const r = await gw.cli(['login'], { env: { ...NO_CI, ...env } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /using the OIDC token from GitHub Actions/);
  assert.match(r.stderr, /signed in as gh-org-app-555-1-[a-z0-9]{6} \(agent\) by policy "github-app"/);
  const token = r.stdout.trim().split('\n').pop()!;
  secrets.push(token);
  assert.deepEqual(ghaRequests.at(-1), { authorization: 'Bearer gha-request-token', audience: 'gatehouse' });

  // Another audience is asked for when told, and is then refused by the policy.
  const other = await gw.cli(['login', '--ci', '--audience', 'elsewhere'], { env: { ...NO_CI, ...env } });
  assert.equal(other.code, 1);
  assert.deepEqual(ghaRequests.at(-1), { authorization: 'Bearer gha-request-token', audience: 'elsewhere' });
  assert.match(other.stderr, /OIDC token refused: audience "elsewhere" is not accepted by policy "github-app"/);

  // A job without id-token: write has no request URL: the message says what to add.
  const noPermission = await gw.cli(['login'], { env: { ...NO_CI, GITHUB_ACTIONS: 'true' } });
  assert.equal(noPermission.code, 1);
  assert.match(noPermission.stderr, /permissions: id-token: write/);
});

test('GitLab-like tokens: project_path and ref_protected conditions, token from the environment, keys from /.well-known/jwks', async () => {
  const token = await gitlab.sign(gitlabClaims());
  secrets.push(token);
  const r = await gw.cli(['login', '--ci'], { env: { ...NO_CI, GITLAB_CI: 'true', GATEHOUSE_ID_TOKEN: token } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /using the OIDC token from environment variable GATEHOUSE_ID_TOKEN/);
  const name = /signed in as (gl-group-app-9001-[a-z0-9]{6}) \(agent\) by policy "gitlab-app"/.exec(r.stderr)?.[1];
  assert.ok(name, r.stderr);
  const gatehouseToken = r.stdout.trim().split('\n').pop()!;
  secrets.push(gatehouseToken);
  assert.ok(gitlab.jwksFetches >= 1, 'keys came from the issuer\'s /.well-known/jwks (no discovery document)');
  await psql(name, gatehouseToken, 'select 1');
  const [s] = await endedSessionsOf(name, 1);
  assert.equal(s.identity.claims?.project_path, 'group/app');
  assert.equal(s.identity.claims?.ref_protected, 'true');
  assert.deepEqual((await sessions('--claim', 'project_path=group/app')).map((x) => x.id), [s.id]);

  const custom = await gw.cli(['login', '--token-env', 'MY_ID_TOKEN'], { env: { MY_ID_TOKEN: await gitlab.sign(gitlabClaims({ ref: 'feature', ref_protected: 'false' })) } });
  assert.equal(custom.code, 1);
  assert.match(custom.stderr, /^using the OIDC token from environment variable MY_ID_TOKEN\n/);
  assert.equal(custom.stderr.trim().split('\n').pop(),
    'gatehouse: OIDC token refused: no trust policy matches: policy "gitlab-app": claim ref_protected is "false", expected "true"');
  const missing = await gw.cli(['login', '--token-env', 'NOT_SET_ANYWHERE'], { env: NO_CI });
  assert.match(missing.stderr, /environment variable NOT_SET_ANYWHERE is not set/);
  // Outside CI, a bare `login` is a person's browser sign-in; this gateway offers none, and says how a job signs in.
  const nothing = await gw.cli(['login', '--no-browser'], { env: NO_CI });
  assert.match(nothing.stderr, /no identity providers for people to sign in with \(sso in gatehouse\.yaml\); a CI job or agent run signs in with --oidc-token TOKEN, --token-env VAR, or --ci/);
});

test('the gatehouse token lives max_ttl at most, and never beyond the OIDC token\'s own expiry', async () => {
  const t0 = Date.now();
  const long = await exchange(await github.sign(githubClaims(), { expiresIn: 3600 }));
  const longMs = Date.parse(long.expiresAt) - t0;
  assert.ok(longMs > 14 * 60_000 && longMs <= 15 * 60_000 + 1000, `capped by max_ttl (15m): ${longMs} ms`);

  const now = Math.floor(Date.now() / 1000);
  const short = await exchange(await github.sign(githubClaims({ exp: now + 120 })));
  const shortExpiry = Date.parse(short.expiresAt);
  assert.ok(shortExpiry <= (now + 120) * 1000 && shortExpiry > (now + 115) * 1000, `capped by the OIDC token's exp: ${short.expiresAt}`);

  const gl = await exchange(await gitlab.sign(gitlabClaims({ exp: now + 3600 })));
  const glMs = Date.parse(gl.expiresAt) - Date.now();
  assert.ok(glMs > 9 * 60_000 && glMs <= 10 * 60_000 + 1000, `the GitLab policy's 10m: ${glMs} ms`);
});

test('a run identity never administers, whatever its groups: admin through its trust policy\'s group or a membership is ignored (403)', async () => {
  await gw.cliOk(['group', 'add', 'ci-deployers']);
  await gw.cliOk(['group', 'add', 'platform']);
  // This gateway refuses an admin grant to a group its trust policies hand to run identities…
  const refusedGrant = await gw.cli(['grant', 'group:ci-deployers', '*', '--action', 'admin']);
  assert.equal(refusedGrant.code, 1);
  assert.match(refusedGrant.stderr, /group ci-deployers is given to run identities by trust policy "github-app", and a run identity is never an administrator/);
  // …but a gateway with another configuration sharing the store can add one (written to the store
  // directly here): the access stage, deciding each request, is the guard.
  const store = new SqliteStore(path.join(gw.dataDir, 'gatehouse.db'));
  try {
    const group = await store.getGroupByName('ci-deployers');
    await store.addAccessGrant({ id: 'grant_ci_admin', subjectType: 'group', subjectId: group!.id, action: 'admin', connectionId: null, createdAt: Date.now() });
  } finally {
    await store.close();
  }
  await gw.cliOk(['grant', 'group:platform', '*', '--action', 'admin']);
  const ran = await exchange(await github.sign(githubClaims({ run_id: '666' })));
  assert.equal(ran.identity.kind, 'agent');
  await gw.cliOk(['group', 'member', 'add', 'platform', ran.identity.name]);
  const direct = await gw.cli(['grant', ran.identity.name, '*', '--action', 'admin']);
  assert.match(direct.stderr, new RegExp(`identity "${ran.identity.name}" is a run identity, which is never an administrator`));

  const denied = new RegExp(`identity "${ran.identity.name}" is not an administrator: identity ${ran.identity.name} has no admin grant on every connection \\(\\*\\), `
    + `directly or through groups \\[platform, ci-deployers\\]; it is a run identity, which never holds admin \\(ignored: grant grant_ci_admin to group:ci-deployers, grant \\S+ to group:platform\\)`);
  for (const args of [['token', 'issue', 'admin', '--ttl', '90d'], ['identity', 'add', 'evil', '--kind', 'human'], ['grant', ran.identity.name, '*', '--action', 'admin'],
    ['group', 'member', 'add', 'platform', 'admin'], ['connection', 'list'], ['grants']]) {
    const r = await gw.cli(args, { token: ran.token });
    assert.equal(r.code, 1, `${args.join(' ')} must be refused: ${r.stdout}`);
    assert.match(r.stderr, denied, args.join(' '));
  }
  const api = await fetch(`${gw.url}/api/v1/identities/admin/tokens`, {
    method: 'POST', headers: { authorization: `Bearer ${ran.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ ttlSeconds: 90 * 86400 }),
  });
  assert.equal(api.status, 403);
  const me = await fetch(`${gw.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${ran.token}` } });
  assert.equal((await me.json() as { admin: boolean }).admin, false);
  const check = await gw.cli(['access', 'check', ran.identity.name, '*', '--action', 'admin']);
  assert.equal(check.code, 1);
  assert.match(check.stdout, /it is a run identity, which never holds admin/);
  // The same group makes a person an administrator.
  await gw.cliOk(['identity', 'add', 'pat', '--kind', 'human']);
  await gw.cliOk(['group', 'member', 'add', 'platform', 'pat']);
  const patToken = (await gw.cliOk(['token', 'issue', 'pat', '--ttl', '1h'])).trim().split('\n').pop()!;
  secrets.push(patToken);
  await gw.cliOk(['identity', 'list'], { token: patToken });
  await gw.cliOk(['group', 'rm', 'ci-deployers']);
  await gw.cliOk(['group', 'rm', 'platform']);
});

test('the gateway refuses to start with a trust policy whose groups hold admin', async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'gatehouse-admin-policy-'));
  try {
    const first = await startTestGateway({ dataDir });
    await first.cliOk(['group', 'add', 'platform']);
    await first.cliOk(['grant', 'group:platform', '*', '--action', 'admin']);
    const grantId = (JSON.parse(await first.cliOk(['grants', '--json'])) as Array<{ id: string; subject: string }>).find((g) => g.subject === 'group:platform')!.id;
    await first.stop();
    const config = path.join(dataDir, 'gatehouse.yaml');
    writeFileSync(config, `
workload_identity:
  policies:
    - name: ci
      issuer: ${github.url}
      kind: github
      audience: gatehouse
      claims: { repository: org/app }
      groups: [platform]
`);
    await assert.rejects(startTestGateway({ dataDir, args: ['--config', config] }), (err: Error) => {
      assert.match(err.message, new RegExp(`workload_identity: trust policy "ci" gives its run identities group platform, which holds admin on \\* \\(grant ${grantId}\\)\\. `
        + `A run identity is never an administrator: take the group out of the policy's groups, or revoke the grant \\(gatehouse revoke group:platform '\\*' --action admin\\)`));
      return true;
    });
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('the gateway log never holds an OIDC token or a gatehouse token', () => {
  const logs = gw.logs();
  assert.ok(secrets.length > 20);
  for (const s of secrets) assert.ok(!logs.includes(s), `a token is in the log: ${s.slice(0, 24)}…`);
  assert.match(logs, /OIDC token exchanged/);
  assert.match(logs, /OIDC token refused/);
});
