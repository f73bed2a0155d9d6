// The pure parts of workload identity: checking trust policies at load, claim patterns, policy
// choice and its explanations, run identity names, and which claims a run identity keeps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseWorkloadIdentity, type TrustPolicy } from '../../src/identity/workload/config.ts';
import { choosePolicy, matchesClaimPattern } from '../../src/identity/workload/trust-policy.ts';
import { claimSeparators } from '../../src/identity/workload/claim-pattern.ts';
import { runIdentityName } from '../../src/identity/workload/identity-name.ts';
import { recordedClaims } from '../../src/identity/workload/exchange.ts';
import type { VerifiedOidcToken } from '../../src/identity/workload/verify-oidc-token.ts';
import { WorkloadExchange } from '../../src/identity/workload/exchange.ts';
import { WorkloadRefusal } from '../../src/identity/workload/errors.ts';
import { exchangedTokenKey, ReplayGuard } from '../../src/identity/workload/replay-guard.ts';
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
    name: 'gh', issuer: GH, kind: 'github', audience: 'gatehouse', jwksUrl: undefined, identityName: undefined, maxTtlSeconds: 3600, grants: ['app'], groups: ['ci'],
    claims: { repository_owner_id: ['42'], ref_protected: ['true'], ref: ['refs/heads/main', 'refs/tags/*'] },
  });
  assert.equal(parseWorkloadIdentity({ policies: [policy()] }).policies[0].maxTtlSeconds, 900, 'max_ttl defaults to 15m');
  assert.deepEqual(parseWorkloadIdentity(undefined).policies, []);
  const bad: Array<[unknown, RegExp]> = [
    [{ policies: [policy({ issuer: 'http://issuer.example' })] }, /issuer "http:\/\/issuer.example" must be an https:\/\/ URL \(http:\/\/ only on a loopback address\)/],
    [{ policies: [policy({ claims: {} })] }, /would admit tokens of every repository on GitHub/],
    [{ policies: [policy({ claims: { repository: '*' } })] }, /claims.repository "\*" pins nothing/],
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

test('sub is segmented at : and /: * stays within a segment, ** crosses; near misses do not match', () => {
  const sub = (value: string, pattern: string) => matchesClaimPattern(value, pattern, claimSeparators('sub'));
  assert.equal(claimSeparators('sub'), ':/');
  assert.equal(claimSeparators('repository'), '/');
  // What repo:org/* is for: the repositories of org, nothing more.
  assert.ok(sub('repo:org/x', 'repo:org/*'));
  for (const nearMiss of ['repo:org/x:pull_request', 'repo:org/x:environment:prod', 'repo:org/x:ref:refs/heads/main', 'repo:org-evil/x', 'repo:orgx/x',
    'repo:Org/x', 'repo:ORG/x', 'repo:org/', 'repo:org', 'repo:org/x/y', 'repo:org/x:', 'xrepo:org/x', 'repo:org/x\n', ' repo:org/x']) {
    assert.ok(!sub(nearMiss, 'repo:org/*'), `repo:org/* must not match ${JSON.stringify(nearMiss)}`);
  }
  // The context part is matched segment by segment too.
  assert.ok(sub('repo:org/x:environment:prod', 'repo:org/*:environment:*'));
  assert.ok(!sub('repo:org/x:environment:', 'repo:org/*:environment:*'), 'a whole-segment * is never empty');
  assert.ok(!sub('repo:org/x:environment:prod:extra', 'repo:org/*:environment:*'));
  assert.ok(sub('repo:org/x:ref:refs/heads/main', 'repo:org/x:ref:refs/heads/*'));
  assert.ok(!sub('repo:org/x:ref:refs/heads/feature/y', 'repo:org/x:ref:refs/heads/*'), '* in sub does not cross / either');
  assert.ok(sub('repo:org/x:ref:refs/heads/feature/y', 'repo:org/x:ref:refs/heads/**'));
  // ** crosses every separator: "every context of org's repositories", and nothing outside org.
  assert.ok(sub('repo:org/x:pull_request', 'repo:org/**'));
  assert.ok(sub('repo:org/x:environment:prod', 'repo:org/**'));
  assert.ok(!sub('repo:org-evil/x:pull_request', 'repo:org/**'));
  assert.ok(!sub('repo:org/', 'repo:org/**'), 'a whole-segment ** is never empty');
  assert.ok(sub('repo:org-evil/x', 'repo:org**'), 'a ** glued to the owner is a prefix match (and is refused at load as a pin)');
  // Partial-segment stars: zero or more characters, still within the segment.
  assert.ok(sub('repo:org/app-1', 'repo:org/app-*'));
  assert.ok(sub('repo:org/app-', 'repo:org/app-*'));
  assert.ok(!sub('repo:org/app-1:pull_request', 'repo:org/app-*'));
  // GitLab's sub format.
  assert.ok(sub('project_path:group/app:ref_type:branch:ref:main', 'project_path:group/*:ref_type:branch:ref:main'));
  assert.ok(!sub('project_path:group/sub/app:ref_type:branch:ref:main', 'project_path:group/*:ref_type:branch:ref:main'), 'a subgroup is another segment');
  assert.ok(!sub('project_path:group/app:ref_type:tag:ref:main', 'project_path:group/*:ref_type:branch:ref:main'));
  // Other claims keep path segments only: : is an ordinary character there.
  assert.ok(matchesClaimPattern('prod:eu', 'prod*', claimSeparators('environment')));
  assert.ok(!matchesClaimPattern('org-evil/x', 'org/*'));
  assert.ok(!matchesClaimPattern('org/', 'org/*'));
  assert.ok(!matchesClaimPattern('org//x', 'org/*'));
  assert.ok(!matchesClaimPattern('Org/app', 'org/app'), 'case-sensitive');
  assert.ok(!matchesClaimPattern('refs/heads/a\u0000b', 'refs/heads/**'), 'no wildcard matches a control character');
  assert.ok(!matchesClaimPattern('refs/heads/\u001b[2J', 'refs/heads/*'));
  // Regular-expression characters are literal.
  assert.ok(!matchesClaimPattern('repoXorg/x', 'repo.org/*'));
  assert.ok(matchesClaimPattern('a+b/c', 'a+b/*'));
  assert.ok(!matchesClaimPattern('aab/c', 'a+b/*'));
});

test('the token exchange matches sub segment by segment: repo:org/* refuses a pull request or an environment of the repository', () => {
  const cfg = parseWorkloadIdentity({ policies: [policy({ claims: { sub: 'repo:org/*' } })] });
  const decide = (sub: string) => choosePolicy(cfg.policies, { issuer: GH, audiences: ['gatehouse'], payload: { iss: GH, sub }, expiresAt: 0 });
  assert.equal(decide('repo:org/app').ok, true);
  assert.deepEqual(decide('repo:org/app:pull_request'), { ok: false, reason: 'no trust policy matches: policy "gh": claim sub is "repo:org/app:pull_request", expected "repo:org/*"' });
  assert.equal(decide('repo:org/app:environment:prod').ok, false);
  // A claim holding control characters is shown escaped.
  assert.deepEqual(decide('repo:evil/\u001b[2Jx'), { ok: false, reason: 'no trust policy matches: policy "gh": claim sub is "repo:evil/\\u001b[2Jx", expected "repo:org/*"' });
});

test('weak policies are refused at load, naming the policy, the claim and why', () => {
  const refused = (p: Record<string, unknown>): string => {
    try {
      parseWorkloadIdentity({ policies: [p] });
    } catch (err) {
      return (err as Error).message;
    }
    return 'accepted';
  };
  const github = (claims: Record<string, unknown>, o: Record<string, unknown> = {}) => refused(policy({ name: 'weak', claims, ...o }));
  const EVERY_REPO = /^workload_identity\.policies\[0\] \("weak"\): would admit tokens of every repository on GitHub: it pins none of the claims that say whose job it is \(repository_owner_id, repository_id, repository_owner or repository \(OWNER\/REPO\), or sub "repo:OWNER\/REPO…"\)/;
  // The shapes of the issue: each passed the old "does not start with *" check.
  for (const [claims, why] of [
    [{ sub: 'repo:**' }, /claims\.sub "repo:\*\*" pins nothing: it needs "repo:OWNER\/…" with OWNER written out/],
    [{ ref: 'refs/heads/main' }, /; ref holds for jobs of every GitHub repository as well$/],
    [{ event_name: 'push' }, /; event_name holds for jobs of every GitHub repository as well$/],
    [{ ref: 'refs/heads/main', event_name: 'push', workflow: 'deploy' }, /; ref, event_name, workflow hold for jobs of every GitHub repository as well$/],
    [{ repository: '*/app' }, /claims\.repository "\*\/app" pins nothing: it needs OWNER\/REPO with the owner written out \(REPO may be a wildcard\)/],
    [{ repository: 'org*/app' }, /claims\.repository "org\*\/app" pins nothing/],
    [{ repository: 'org*' }, /claims\.repository "org\*" pins nothing/],
    [{ repository: '**' }, /claims\.repository "\*\*" pins nothing/],
    [{ repository: ['org/app', '*/app'] }, /claims\.repository "\*\/app" pins nothing/],
    [{ repository_owner: 'org*' }, /claims\.repository_owner "org\*" pins nothing: it needs the owner written out, no wildcard/],
    [{ repository_owner_id: '4*' }, /claims\.repository_owner_id "4\*" pins nothing: it needs the owner's id written out/],
    [{ repository_id: '' }, /claims\.repository_id "" pins nothing/],
    [{ sub: 'repo:org*' }, /claims\.sub "repo:org\*" pins nothing/],
    [{ sub: 'repo:*/app:ref:refs/heads/main' }, /claims\.sub "repo:\*\/app:ref:refs\/heads\/main" pins nothing/],
    [{ sub: '*:org/app' }, /claims\.sub "\*:org\/app" pins nothing/],
    [{ sub: 'job_workflow_ref:org/app/*' }, /claims\.sub "job_workflow_ref:org\/app\/\*" pins nothing/],
    [{}, /\(OWNER\/REPO\), or sub "repo:OWNER\/REPO…"\)$/],
  ] as Array<[Record<string, unknown>, RegExp]>) {
    const message = github(claims);
    assert.match(message, EVERY_REPO, JSON.stringify(claims));
    assert.match(message, why, JSON.stringify(claims));
  }
  // Pinned: an id or owner exactly, OWNER/REPO with the owner written out, sub repo:OWNER/…
  for (const claims of [{ repository_owner_id: 42 }, { repository_id: '4242', ref: 'refs/heads/*' }, { repository_owner: 'org' }, { repository: 'org/*' }, { repository: 'org/app' },
    { repository: 'org/**' }, { sub: 'repo:org/*' }, { sub: 'repo:org/app:ref:refs/heads/main' }, { sub: 'repo:org/**' }, { sub: 'repository_owner_id:42:*' },
    { sub: 'repo:org/app:environment:prod' }, { repository: '*/app', repository_owner_id: '42' }]) {
    assert.equal(github(claims), 'accepted', JSON.stringify(claims));
  }
  // GitHub Enterprise Server issuers are GitHub-kind by their path; GitHub's issuer cannot be called generic.
  assert.match(github({ ref: 'refs/heads/main' }, { issuer: 'https://ghe.example.com/_services/token' }), /would admit tokens of every repository on GitHub/);
  assert.match(github({ repository: 'org/app' }, { kind: 'generic' }), /issuer "https:\/\/token.actions.githubusercontent.com" is GitHub's: kind must be github/);
  assert.match(github({ repository: 'org/app' }, { identifying_claims: ['ref'] }), /identifying_claims is for kind: generic only/);
  assert.match(github({ repository: 'org/app' }, { kind: 'jenkins' }), /kind must be one of github, gitlab, generic/);

  // GitLab: project/namespace ids exactly, paths with the top-level group written out.
  const gitlab = (claims: Record<string, unknown>, o: Record<string, unknown> = {}) => refused(policy({ name: 'weak', issuer: 'https://gitlab.com', claims, ...o }));
  assert.match(gitlab({ ref_protected: true }), /^workload_identity\.policies\[0\] \("weak"\): would admit tokens of every project on GitLab: .*; ref_protected holds for jobs of every GitLab project as well$/);
  assert.match(gitlab({ project_path: '*/app' }), /claims\.project_path "\*\/app" pins nothing: it needs GROUP\/… with the top-level group written out/);
  assert.match(gitlab({ sub: 'project_path:*' }), /claims\.sub "project_path:\*" pins nothing/);
  assert.match(gitlab({ sub: 'repo:group/app' }), /accepted/, 'an exact sub pins it');
  for (const claims of [{ project_path: 'group/app' }, { namespace_path: 'group' }, { namespace_path: 'group/**' }, { project_id: 77 }, { namespace_id: '5' }, { sub: 'project_path:group/*:ref_type:branch:ref:main' }]) {
    assert.equal(gitlab(claims), 'accepted', JSON.stringify(claims));
  }
  assert.match(refused(policy({ name: 'weak', issuer: 'https://gitlab.example.com', kind: 'gitlab', claims: { ref: 'main' } })), /every project on GitLab/);

  // Generic issuers: identifying_claims, or sub with its first two segments written out.
  const generic = (claims: Record<string, unknown>, o: Record<string, unknown> = {}) => refused(policy({ name: 'weak', issuer: 'https://ci.example.com', claims, ...o }));
  assert.match(generic({ repository: 'org/app' }), /^workload_identity\.policies\[0\] \("weak"\): has a generic issuer \(kind: generic; .*\) and no identifying_claims: name the claims that say whose token it is in identifying_claims .*; repository alone could match anyone's token$/);
  assert.match(generic({ sub: 'organization:*' }), /no identifying_claims, and claims\.sub "organization:\*" pins nothing: it needs its first two segments written out/);
  assert.match(generic({ sub: '**' }), /claims\.sub "\*\*" pins nothing/);
  assert.match(generic({ ref: 'main' }, { identifying_claims: ['organization_slug'] }), /does not pin its identifying claims: identifying claim organization_slug has no condition in claims/);
  assert.match(generic({ organization_slug: 'acme*' }, { identifying_claims: ['organization_slug'] }), /claims\.organization_slug "acme\*" pins nothing: it needs its first segment written out/);
  assert.match(generic({ a: 'x' }, { identifying_claims: [] }), /identifying_claims names no claim/);
  for (const [claims, o] of [[{ sub: 'organization:acme:pipeline:*' }, {}], [{ sub: 'user-1234' }, {}], [{ organization_slug: 'acme', ref: '*' }, { identifying_claims: 'organization_slug' }],
    [{ org: 'acme/**', team: 't' }, { identifying_claims: ['org', 'team'] }]] as Array<[Record<string, unknown>, Record<string, unknown>]>) {
    assert.equal(generic(claims, o), 'accepted', JSON.stringify([claims, o]));
  }
  const ok = parseWorkloadIdentity({ policies: [policy({ issuer: 'https://ci.example.com', identifying_claims: ['organization_slug'], claims: { organization_slug: 'acme' } })] });
  assert.deepEqual([ok.policies[0].kind, ok.policies[0].identifyingClaims], ['generic', ['organization_slug']]);
  // Claim names that are Object.prototype's own names are no identifying rule, and __proto__ is no claim name.
  assert.match(github({ constructor: 'x' }), /would admit tokens of every repository on GitHub: .*; constructor holds for jobs of every GitHub repository as well$/);
  assert.match(github({ toString: 'x', hasOwnProperty: 'y' }), /; toString, hasOwnProperty hold for jobs/);
  assert.match(generic({ ref: 'x' }, { identifying_claims: ['constructor'] }), /identifying claim constructor has no condition in claims/);
  assert.match(generic({ sub: 'x' }, { identifying_claims: ['__proto__'] }), /identifying claim name "__proto__" is not allowed/);
  assert.match(refused(policy({ claims: JSON.parse('{"repository_owner_id": "42", "__proto__": "x"}') })), /claim name "__proto__" is not allowed/);
  // A policy name with control characters is shown escaped.
  assert.match(refused(policy({ name: 'x\u001b[31m', claims: { ref: 'x' } })), /^workload_identity\.policies\[0\] \("x\\u001b\[31m"\): name is required/);
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

test('replay guard: keys are hashes of issuer and jti (or of the token); expired entries are pruned at most once a minute; a failed prune refuses nothing', async () => {
  const key = exchangedTokenKey('https://a.example', 'j-1', 'the.token.text');
  assert.match(key, /^jti:[0-9a-f]{64}$/);
  assert.ok(!key.includes('j-1'));
  assert.notEqual(exchangedTokenKey('https://b.example', 'j-1', 'the.token.text'), key, 'two issuers\' jtis never collide');
  assert.notEqual(exchangedTokenKey('https://a.example', 'j-', '1'), exchangedTokenKey('https://a.example', 'j', '-1'));
  assert.equal(exchangedTokenKey('https://a.example', 'j-1', 'other.token.text'), key, 'the jti decides, not the bytes');
  const byToken = exchangedTokenKey('https://a.example', undefined, 'the.token.text');
  assert.match(byToken, /^token:[0-9a-f]{64}$/);
  assert.equal(exchangedTokenKey('https://a.example', '', 'the.token.text'), byToken, 'an empty jti is no jti');
  assert.equal(exchangedTokenKey('https://a.example', 42, 'the.token.text'), byToken, 'a jti that is not a string is no jti');

  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-replay-guard-'));
  const store = new SqliteStore(path.join(dir, 'gatehouse.db'));
  try {
    let now = 1_790_000_000_000;
    const pruneErrors: string[] = [];
    let failPrune = false;
    const pruning = Object.create(store) as SqliteStore;
    let prunes = 0;
    pruning.deleteExchangedTokens = async (before: number) => {
      prunes++;
      if (failPrune) throw new Error('store unavailable');
      return store.deleteExchangedTokens(before);
    };
    const guard = new ReplayGuard(pruning, { now: () => now, onPruneError: (err) => pruneErrors.push(err.message) });
    const claim = (jti: string, keepUntil: number) => guard.claim({ issuer: 'https://a.example', jti, token: `t.${jti}.s`, keepUntil });
    await claim('one', now + 5000);
    await assert.rejects(claim('one', now + 5000), (err: Error) => err instanceof WorkloadRefusal && /exchanged before \(same jti\)/.test(err.message));
    assert.equal(prunes, 1, 'pruned on the first claim');
    now += 10_000;
    await claim('one', now + 5000); // expired and not yet pruned: replaced (an issuer may reuse a jti once the first token is dead)
    assert.equal(prunes, 1, 'not again within the minute');
    now += 60_000;
    await claim('two', now + 5000);
    assert.equal(prunes, 2);
    assert.equal(Number(store.db.prepare('SELECT count(*) AS n FROM exchanged_oidc_tokens').get()?.n), 1, 'the prune removed the expired entry of "one"');
    failPrune = true;
    now += 60_000;
    await claim('three', now + 5000);
    assert.deepEqual(pruneErrors, ['store unavailable']);
    await assert.rejects(claim('three', now + 5000), WorkloadRefusal);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
