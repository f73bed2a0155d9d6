// The pure parts of workload identity: checking trust policies at load, claim patterns, policy
// choice and its explanations, run identity names, and which claims a run identity keeps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseWorkloadIdentity, type TrustPolicy } from '../../src/identity/workload/config.ts';
import { choosePolicy, matchesClaimPattern } from '../../src/identity/workload/trust-policy.ts';
import { runIdentityName } from '../../src/identity/workload/identity-name.ts';
import { recordedClaims } from '../../src/identity/workload/exchange.ts';
import type { VerifiedOidcToken } from '../../src/identity/workload/verify-oidc-token.ts';
import { WorkloadExchange } from '../../src/identity/workload/exchange.ts';
import { WorkloadRefusal } from '../../src/identity/workload/errors.ts';
import { IdentityService } from '../../src/identity/identity-service.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { silentLogger } from '../../src/util/logger.ts';
import { generateKeyPair, SignJWT } from 'jose';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const GH = 'https://token.actions.githubusercontent.com';

function policy(o: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'gh', issuer: GH, audience: 'gatehouse', claims: { repository: 'org/app' }, ...o };
}

test('policies are checked when the configuration loads', () => {
  const ok = parseWorkloadIdentity({ clock_skew: '10s', policies: [policy({ grants: 'app', groups: ['ci'], max_ttl: '1h', claims: { repository_owner_id: 42, ref_protected: true, ref: ['refs/heads/main', 'refs/tags/*'] } })] });
  assert.equal(ok.clockSkewSeconds, 10);
  assert.deepEqual(ok.policies[0], {
    name: 'gh', issuer: GH, audience: 'gatehouse', jwksUrl: undefined, identityName: undefined, maxTtlSeconds: 3600, grants: ['app'], groups: ['ci'],
    claims: { repository_owner_id: ['42'], ref_protected: ['true'], ref: ['refs/heads/main', 'refs/tags/*'] },
  });
  assert.equal(parseWorkloadIdentity({ policies: [policy()] }).policies[0].maxTtlSeconds, 900, 'max_ttl defaults to 15m');
  assert.deepEqual(parseWorkloadIdentity(undefined).policies, []);
  const bad: Array<[unknown, RegExp]> = [
    [{ policies: [policy({ issuer: 'http://issuer.example' })] }, /issuer "http:\/\/issuer.example" must be an https:\/\/ URL \(http:\/\/ only on a loopback address\)/],
    [{ policies: [policy({ claims: {} })] }, /at least one claim condition must pin a value/],
    [{ policies: [policy({ claims: { repository: '*' } })] }, /at least one claim condition must pin a value/],
    [{ policies: [policy({ claims: undefined })] }, /claims \(the conditions a token must meet\) are required/],
    [{ policies: [policy(), policy()] }, /two policies are named "gh"/],
    [{ policies: [policy({ jwks_url: 'https://a.example/jwks' }), policy({ name: 'other' })] }, /policies of issuer ".*" name different jwks_url values/],
    [{ policies: [policy({ audience: '' })] }, /audience is required/],
    [{ policies: [policy({ max_ttl: '2d' })] }, /longer than the maximum of 12h/],
    [{ policies: [policy({ grant: ['app'] })] }, /unknown setting "grant"/],
    [{ policies: [policy({ identity_name: 'gh-{repo/name}' })] }, /identity_name placeholders/],
    [{ policies: [policy({ claims: { 'a b': 'x' } })] }, /claim name "a b" is not allowed/],
  ];
  for (const [raw, message] of bad) assert.throws(() => parseWorkloadIdentity(raw), message);
});

test('claim patterns: exact, * within a path segment, ** across segments', () => {
  assert.ok(matchesClaimPattern('org/app', 'org/app'));
  assert.ok(!matchesClaimPattern('org/app2', 'org/app'));
  assert.ok(matchesClaimPattern('org/app', 'org/*'));
  assert.ok(!matchesClaimPattern('org/app/x', 'org/*'));
  assert.ok(!matchesClaimPattern('other/app', 'org/*'));
  assert.ok(matchesClaimPattern('refs/heads/main', 'refs/heads/*'));
  assert.ok(!matchesClaimPattern('refs/heads/feature/x', 'refs/heads/*'));
  assert.ok(matchesClaimPattern('refs/heads/feature/x', 'refs/heads/**'));
  assert.ok(matchesClaimPattern('org/app/.github/workflows/deploy.yml@refs/heads/main', 'org/app/.github/workflows/*@refs/heads/*'));
  assert.ok(!matchesClaimPattern('org/app.x', 'org/app?x'), 'only * is special');
  assert.ok(matchesClaimPattern('a.b(c)', 'a.b(c)'));
});

test('the first matching policy wins; refusals say what each policy missed', () => {
  const cfg = parseWorkloadIdentity({ policies: [
    policy({ name: 'prod', claims: { repository: 'org/app', environment: 'production' } }),
    policy({ name: 'any-branch', claims: { repository: 'org/app', ref: 'refs/heads/**' } }),
  ] });
  const token = (payload: Record<string, unknown>, audiences = ['gatehouse']): VerifiedOidcToken => ({ issuer: GH, audiences, payload: { iss: GH, ...payload }, expiresAt: 0 });
  const pick = (t: VerifiedOidcToken) => { const d = choosePolicy(cfg.policies, t); return d.ok ? d.policy.name : d.reason; };
  assert.equal(pick(token({ repository: 'org/app', environment: 'production', ref: 'refs/heads/main' })), 'prod');
  assert.equal(pick(token({ repository: 'org/app', ref: 'refs/heads/x/y' })), 'any-branch');
  assert.equal(pick(token({ repository: 'org/app', environment: 'staging', ref: 'refs/tags/v1' })),
    'no trust policy matches: policy "prod": claim environment is "staging", expected "production"; policy "any-branch": claim ref is "refs/tags/v1", expected "refs/heads/**"');
  assert.equal(pick(token({ repository: 'org/app' }, ['a', 'b'])), 'audience "a", "b" is not accepted by policy "prod" or policy "any-branch"');
  assert.equal(pick(token({ repository: ['org/app'], environment: 'production' })),
    'no trust policy matches: policy "prod": claim repository is not a string, expected "org/app"; policy "any-branch": claim repository is not a string, expected "org/app", claim ref is missing, expected "refs/heads/**"');
  const multi: TrustPolicy = { ...cfg.policies[0], claims: { environment: ['staging', 'production'] } };
  const d = choosePolicy([multi], token({ environment: 'dev' }));
  assert.deepEqual(d, { ok: false, reason: 'no trust policy matches: policy "prod": claim environment is "dev", expected one of "staging", "production"' });
});

test('run identity names: readable, valid, unique by suffix, at most 63 characters', () => {
  const claims = { repository: 'Org/My App', run_id: '123', run_attempt: '2' };
  assert.equal(runIdentityName('gh-{repository}-{run_id}-{run_attempt}', 'p', claims, 'abc123'), 'gh-Org-My-App-123-2-abc123');
  assert.equal(runIdentityName(undefined, 'github-app', claims, 'abc123'), 'github-app-abc123');
  assert.equal(runIdentityName('{missing}', 'p', claims, 'abc123'), 'run-abc123');
  assert.equal(runIdentityName('--{repository}', 'p', { repository: '/x/' }, 'abc123'), 'x-abc123');
  const long = runIdentityName('{repository}', 'p', { repository: 'a'.repeat(200) }, 'abc123');
  assert.equal(long.length, 63);
  assert.match(long, /^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/);
});

test('claims kept on a run identity: scalars as text, the accepted audience, no timing claims', () => {
  assert.deepEqual(recordedClaims({
    iss: GH, sub: 'repo:org/app', aud: ['gatehouse', 'other'], exp: 1, iat: 2, nbf: 3, run_id: 42, ref_protected: true,
    nested: { a: 1 }, list: ['x'], 'bad name': 'x', huge: 'x'.repeat(5000),
  }, 'gatehouse'), { iss: GH, sub: 'repo:org/app', aud: 'gatehouse', run_id: '42', ref_protected: 'true' });
});

test('the exchange: explain_refusals false hides the conditions; a token about to expire is refused; grants and claims land in the store', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-exchange-'));
  const store = new SqliteStore(path.join(dir, 'gatehouse.db'));
  try {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const keys = { keysFor: async () => [publicKey] };
    await store.createConnection({ id: 'conn_app', name: 'app', type: 'postgres', host: 'h', port: 5432, database: 'd', username: 'u', sealedSecret: null, options: {}, createdAt: 0 });
    const config = parseWorkloadIdentity({ explain_refusals: false, clock_skew: '60s', policies: [policy({ grants: ['app'], groups: ['g'], max_ttl: '5m' })] });
    const exchange = new WorkloadExchange({ store, identity: new IdentityService(store), config, log: silentLogger(), keys });
    const sign = (claims: Record<string, unknown>, exp: number) => new SignJWT({ iss: GH, aud: 'gatehouse', iat: Math.floor(Date.now() / 1000), exp, ...claims }).setProtectedHeader({ alg: 'ES256' }).sign(privateKey);
    const now = Math.floor(Date.now() / 1000);

    await assert.rejects(exchange.exchange(await sign({ repository: 'org/other' }, now + 300)), (err: Error) => err instanceof WorkloadRefusal && err.message === 'no trust policy matches');
    // Within the clock skew jose still accepts it, but there is no time left to issue a token for.
    await assert.rejects(exchange.exchange(await sign({ repository: 'org/app' }, now - 10)), (err: Error) => err instanceof WorkloadRefusal && /^token expired at /.test(err.message));

    const out = await exchange.exchange(await sign({ repository: 'org/app', run_id: 7 }, now + 3600));
    assert.equal(out.policy, 'gh');
    assert.deepEqual(out.granted, ['app']);
    assert.ok(out.expiresAt - Date.now() <= 300_000 && out.expiresAt - Date.now() > 290_000, 'max_ttl 5m');
    const stored = await store.getIdentityByName(out.identity.name);
    assert.deepEqual({ kind: stored?.kind, admin: stored?.isAdmin, claims: stored?.claims, source: stored?.authSource, groups: stored?.externalGroups },
      { kind: 'agent', admin: false, claims: { iss: GH, aud: 'gatehouse', repository: 'org/app', run_id: '7' }, source: 'oidc-exchange:gh', groups: ['g'] });
    assert.deepEqual((await store.listAccessGrantsOf(stored!.id, [])).map((g) => [g.subjectName, g.action, g.connectionName]), [[stored!.name, 'connect', 'app']]);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
