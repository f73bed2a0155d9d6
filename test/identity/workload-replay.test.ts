// An OIDC ID token is exchanged once: real gateways (one on its embedded SQLite store, restarted;
// two sharing a PostgreSQL store), a local issuer signing ES256 JWTs and serving its JWKS,
// `gatehouse login` and the HTTP API. A replay is refused with a clear error (with or without a
// jti), after a restart too, on the other gateway of a shared store too; of concurrent exchanges
// of one token exactly one succeeds; the store holds hashes, never a token. Also end to end: sub
// is matched segment by segment, and a weak trust policy stops the gateway at start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let work: string;
let issuer: Server;
let issuerUrl: string;
let signingKey: CryptoKey;
let config: string;
let pg: PgCluster | undefined;
const gateways = new Set<TestGateway>();

const REPLAY = /^OIDC token refused: this token was exchanged before \(same (jti|token)\): an ID token is exchanged once; request a new one from the CI platform$/;

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-replay-'));
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  signingKey = privateKey;
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  issuer = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })));
  await new Promise<void>((resolve) => issuer.listen(0, '127.0.0.1', resolve));
  issuerUrl = `http://127.0.0.1:${(issuer.address() as { port: number }).port}`;
  config = writeConfig('gatehouse.yaml', 'claims: { sub: "repo:org/*" }');
});

after(async () => {
  for (const gw of gateways) await gw.stop().catch(() => {});
  await pg?.stop();
  issuer?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

function writeConfig(name: string, claims: string): string {
  const file = path.join(work, name);
  writeFileSync(file, `
workload_identity:
  policies:
    - name: ci
      issuer: ${issuerUrl}
      kind: github
      jwks_url: ${issuerUrl}/jwks
      audience: gatehouse
      ${claims}
      max_ttl: 5m
`);
  return file;
}

async function gateway(o: { dataDir?: string; store?: string; key?: string } = {}): Promise<TestGateway> {
  const gw = await startTestGateway({
    dataDir: o.dataDir, args: ['--config', config, ...(o.store ? ['--store', o.store] : [])], env: o.key ? { GATEHOUSE_KEY: o.key } : {},
  });
  gateways.add(gw);
  return gw;
}

async function stop(gw: TestGateway): Promise<void> {
  await gw.stop();
  gateways.delete(gw);
}

/** A GitHub-like ID token for org/app; `jti: null` leaves the jti out. */
function idToken(o: { jti?: string | null; sub?: string; iat?: number } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jti = o.jti === undefined ? randomUUID() : o.jti;
  const payload = {
    iss: issuerUrl, aud: 'gatehouse', sub: o.sub ?? 'repo:org/app', repository: 'org/app', run_id: '7', iat: o.iat ?? now, exp: now + 600, ...(jti === null ? {} : { jti }),
  };
  return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(signingKey);
}

async function apiExchange(gw: TestGateway, token: string): Promise<{ status: number; error?: string; token?: string }> {
  const res = await fetch(`${gw.url}/api/v1/auth/oidc-token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
  return { status: res.status, ...(await res.json() as { error?: string; token?: string }) };
}

/** `gatehouse login --oidc-token T`: the exit code and what it printed. */
async function login(gw: TestGateway, token: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await gw.cli(['login', '--oidc-token', token]);
  return { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr.trim() };
}

test('the same ID token twice: the second exchange is refused, the CLI says why; a restart of the gateway forgets nothing', async () => {
  const dataDir = mkdtempSync(path.join(work, 'solo-'));
  let gw = await gateway({ dataDir });
  const withJti = await idToken();
  const withoutJti = await idToken({ jti: null });

  const first = await login(gw, withJti);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout.trim().split('\n').pop()!, /^ght_/);
  const again = await login(gw, withJti);
  assert.equal(again.code, 1, 'the replay fails');
  assert.equal(again.stdout, '', 'and prints no token');
  assert.equal(again.stderr, 'gatehouse: OIDC token refused: this token was exchanged before (same jti): an ID token is exchanged once; request a new one from the CI platform');

  const api = await apiExchange(gw, withJti);
  assert.equal(api.status, 401);
  assert.match(api.error!, REPLAY);
  assert.equal(api.token, undefined);

  // Another token with the same jti (signed again, a second later) is the same token to the issuer.
  const resigned = await idToken({ jti: JSON.parse(Buffer.from(withJti.split('.')[1], 'base64url').toString()).jti, iat: Math.floor(Date.now() / 1000) - 1 });
  assert.notEqual(resigned, withJti);
  assert.equal((await apiExchange(gw, resigned)).status, 401);

  // No jti: the token's SHA-256 is what is remembered.
  assert.equal((await apiExchange(gw, withoutJti)).status, 201);
  const noJtiAgain = await apiExchange(gw, withoutJti);
  assert.deepEqual([noJtiAgain.status, noJtiAgain.error], [401, 'OIDC token refused: this token was exchanged before (same token): an ID token is exchanged once; request a new one from the CI platform']);
  assert.equal((await apiExchange(gw, await idToken({ jti: null }))).status, 201, 'another token without jti is another token');

  await stop(gw);
  gw = await gateway({ dataDir });
  for (const token of [withJti, withoutJti]) {
    const r = await login(gw, token);
    assert.equal(r.code, 1, 'still refused after the restart');
    assert.match(r.stderr.replace(/^gatehouse: /, ''), REPLAY);
  }
  assert.equal((await login(gw, await idToken())).code, 0, 'a fresh token is exchanged');
  assert.match(gw.logs(), /OIDC token refused/);
  await stop(gw);

  // The store holds keys (hashes) only: neither a token nor a jti is in the table, nor anywhere in the database files.
  const db = new DatabaseSync(path.join(dataDir, 'gatehouse.db'), { readOnly: true });
  try {
    const keys = (db.prepare('SELECT token_key FROM exchanged_oidc_tokens ORDER BY token_key').all() as Array<{ token_key: string }>).map((r) => r.token_key);
    assert.equal(keys.length, 4);
    for (const key of keys) assert.match(key, /^(jti|token):[0-9a-f]{64}$/);
  } finally {
    db.close();
  }
  const files = readdirSync(dataDir).filter((f) => f.startsWith('gatehouse.db')).map((f) => readFileSync(path.join(dataDir, f)).toString('latin1'));
  for (const token of [withJti, withoutJti, resigned]) {
    for (const part of [token, token.split('.')[2]]) assert.ok(!files.some((f) => f.includes(part)), 'no token, not even its signature, is stored');
  }
});

test('concurrent exchanges of one ID token: exactly one succeeds', async () => {
  const gw = await gateway();
  try {
    for (const jti of [undefined, null] as const) {
      const token = await idToken({ jti });
      const results = await Promise.all(Array.from({ length: 8 }, () => apiExchange(gw, token)));
      assert.deepEqual(results.map((r) => r.status).sort(), [201, 401, 401, 401, 401, 401, 401, 401], JSON.stringify(results.map((r) => r.error)));
      for (const r of results.filter((x) => x.status === 401)) assert.match(r.error!, REPLAY);
    }
  } finally {
    await stop(gw);
  }
});

test('two gateways on one PostgreSQL store: a token exchanged at one is refused at the other, concurrently too, and after a restart', async () => {
  pg = await startPgCluster();
  await pg.sql('CREATE DATABASE replaystore');
  const store = `postgres://postgres@${pg.host}:${pg.port}/replaystore`;
  const key = randomBytes(32).toString('hex');
  const [dirA, dirB] = [mkdtempSync(path.join(work, 'a-')), mkdtempSync(path.join(work, 'b-'))];
  const a = await gateway({ dataDir: dirA, store, key });
  let b = await gateway({ dataDir: dirB, store, key });

  const token = await idToken();
  assert.equal((await apiExchange(a, token)).status, 201);
  const atB = await login(b, token);
  assert.equal(atB.code, 1);
  assert.match(atB.stderr.replace(/^gatehouse: /, ''), REPLAY);

  for (let round = 0; round < 3; round++) {
    const race = await idToken({ jti: round === 2 ? null : undefined });
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => apiExchange(i % 2 ? a : b, race)));
    assert.equal(results.filter((r) => r.status === 201).length, 1, `round ${round}: ${JSON.stringify(results)}`);
    assert.equal(results.filter((r) => r.status === 401 && REPLAY.test(r.error!)).length, 7);
  }

  await stop(b);
  b = await gateway({ dataDir: dirB, store, key });
  assert.equal((await apiExchange(b, token)).status, 401, 'the restarted gateway refuses it too');
  assert.equal((await apiExchange(b, await idToken())).status, 201);
  await stop(a);
  await stop(b);
  // Five tokens were exchanged; the store holds five keys, each a hash.
  assert.equal((await pg.sql("SELECT count(*) FROM exchanged_oidc_tokens WHERE token_key ~ '^(jti|token):[0-9a-f]{64}$'", 'replaystore')).trim(), '5');
  assert.equal((await pg.sql('SELECT count(*) FROM exchanged_oidc_tokens', 'replaystore')).trim(), '5');
});

test('end to end, sub is matched segment by segment: repo:org/* admits org/app, not its pull requests, environments or org-evil', async () => {
  const gw = await gateway();
  try {
    assert.equal((await apiExchange(gw, await idToken({ sub: 'repo:org/app' }))).status, 201);
    for (const sub of ['repo:org/app:pull_request', 'repo:org/app:environment:prod', 'repo:org-evil/app', 'repo:ORG/app']) {
      const r = await apiExchange(gw, await idToken({ sub }));
      assert.deepEqual([r.status, r.error], [401, `OIDC token refused: no trust policy matches: policy "ci": claim sub is ${JSON.stringify(sub)}, expected "repo:org/*"`]);
    }
  } finally {
    await stop(gw);
  }
});

test('a weak trust policy stops the gateway at start, naming the policy, the claim and why', async () => {
  for (const [claims, why] of [
    ['claims: { sub: "repo:**" }', /claims\.sub "repo:\*\*" pins nothing: it needs "repo:OWNER\/…" with OWNER written out/],
    ['claims: { ref: refs/heads/main }', /; ref holds for jobs of every GitHub repository as well/],
    ['claims: { event_name: push }', /; event_name holds for jobs of every GitHub repository as well/],
  ] as const) {
    const weak = writeConfig(`weak-${randomUUID()}.yaml`, claims);
    await assert.rejects(startTestGateway({ args: ['--config', weak] }), (err: Error) => {
      assert.match(err.message, /workload_identity\.policies\[0\] \("ci"\): would admit tokens of every repository on GitHub: it pins none of the claims that say whose job it is/);
      assert.match(err.message, why);
      return true;
    });
  }
});
