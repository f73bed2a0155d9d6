// People signing in with OpenID Connect, end to end: a real provider (oidc-provider) with test
// accounts, a real gateway whose gatehouse.yaml trusts it, `gatehouse login` as a child process
// printing a link and a code, the browser side played with plain HTTP requests (the provider's
// login form, its redirects, the gateway's callback), psql through the gateway with the stored
// token, the session's attribution, sign-out, and every refusal with the words the person sees.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { GATEHOUSE_BIN, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { startOidcProvider, otherPublicJwks, type TestOidcProvider, type TestAccount } from '../support/oidc-idp.ts';
import { Browser, pageText, type Page } from '../support/browser.ts';
import { confirmSignIn, personEnv, startCliLogin } from '../support/cli-login.ts';
import { hostname } from 'node:os';

const accounts: Record<string, TestAccount> = {
  alice: { password: 'alice-pw', claims: { preferred_username: 'alice', email: 'alice@example.com', name: 'Alice Example', groups: ['dba', 'dev'] } },
  // Her username is an identity the gateway has already (made by an administrator).
  mallory: { password: 'mallory-pw', claims: { preferred_username: 'admin', email: 'mallory@example.com', groups: [] } },
};

let pg: PgCluster;
let gw: TestGateway;
let corp: TestOidcProvider;
let rogue: TestOidcProvider;
let work: string;
/** Tokens of the run: none may show up in the gateway's log. */
const secrets: string[] = [];

function writeConfig(file: string, loginTimeout = '10m'): void {
  writeFileSync(file, `
sso:
  login_timeout: ${loginTimeout}
  token_ttl: 8h
  default_provider: corp
  oidc:
    - name: corp
      issuer: ${corp.issuer}
      client_id: ${corp.clientId}
      client_secret_env: CORP_CLIENT_SECRET
      scopes: [openid, profile, email, groups]
      username_claim: preferred_username
      groups_claim: groups
    - name: rogue
      issuer: ${rogue.issuer}
      client_id: ${rogue.clientId}
      client_secret_env: ROGUE_CLIENT_SECRET
      scopes: [openid, profile]
`);
}

async function startGateway(config: string): Promise<TestGateway> {
  const g = await startTestGateway({ args: ['--config', config], env: { CORP_CLIENT_SECRET: corp.clientSecret, ROGUE_CLIENT_SECRET: rogue.clientSecret } });
  corp.registerClient(`${g.url}/login/oidc/callback`);
  rogue.registerClient(`${g.url}/login/oidc/callback`);
  return g;
}

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-oidc-login-'));
  [corp, rogue] = await Promise.all([startOidcProvider(accounts), startOidcProvider(accounts)]);
  // The rogue provider publishes another key under the id of the one it signs with (a broken or subverted provider).
  rogue.fakeJwks = otherPublicJwks(rogue.keyId);
  const config = path.join(work, 'gatehouse.yaml');
  writeConfig(config);
  [pg, gw] = await Promise.all([startPgCluster(), startGateway(config)]);
  await gw.cliOk(['connection', 'add', 'app', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port), '--database', 'app',
    '--user', 'scram_user', '--password-env', 'TARGET_PASSWORD'], { env: { TARGET_PASSWORD: 'scram-secret' } });
  // People in the IdP group "dba" may connect to app: the group comes from the groups claim.
  await gw.cliOk(['group', 'add', 'dba']);
  await gw.cliOk(['grant', 'group:dba', 'app']);
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  await corp?.close();
  await rogue?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

const configDir = (name: string): string => path.join(work, `home-${name}`);
const isCallback = (u: URL): boolean => u.pathname === '/login/oidc/callback';

/** The provider's login form, filled in and submitted; returns the page the redirects end on (or the callback, with stopAt). */
async function signInAtProvider(browser: Browser, start: Page, account: string, stopAt?: (u: URL) => boolean): Promise<Page> {
  assert.match(start.body, /Sign in/, `expected the provider's login form at ${start.url}`);
  return browser.submit(start, browser.form(start), { login: account, password: accounts[account].password }, { stopAt });
}

/** A whole sign-in: `gatehouse login` in the background, the browser side here. */
async function signIn(account: string, home: string, args: string[] = []): Promise<{ confirmation: Page; page: Page; cli: Awaited<ReturnType<typeof startCliLogin>['exit']>; code: string }> {
  const cli = startCliLogin(['--gateway', gw.url, 'login', '--no-browser', ...args], personEnv({ GATEHOUSE_CONFIG_DIR: home }));
  const { url, code } = await cli.link;
  const browser = new Browser();
  const confirmation = await signInAtProvider(browser, await browser.open(url), account);
  // A refusal at the provider's answer ends there; otherwise the person confirms with the terminal's code.
  const page = /Confirm this sign-in/.test(confirmation.body) ? await confirmSignIn(browser, confirmation, code) : confirmation;
  return { confirmation, page, cli: await cli.exit, code };
}

/** Runs a sign-in to the point where the provider redirects back to the gateway, and returns that URL. */
async function toCallback(account: string, link: string, browser: Browser, tamperAuthorization?: (u: URL) => void): Promise<URL> {
  let first = await browser.open(link, { stopAt: (u) => u.origin === corp.issuer });
  const authorization = new URL(first.url);
  tamperAuthorization?.(authorization);
  first = await browser.open(authorization.href, { stopAt: isCallback });
  const back = await signInAtProvider(browser, first, account, isCallback);
  assert.ok(isCallback(new URL(back.url)), `expected the redirect back to the gateway, got ${back.url}`);
  return new URL(back.url);
}

function storedCredentials(home: string): { default?: string; gateways: Record<string, { token: string; identity: string; expiresAt: string }> } {
  return JSON.parse(readFileSync(path.join(home, 'credentials.json'), 'utf8')) as ReturnType<typeof storedCredentials>;
}

async function psql(user: string, token: string, sql: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return run('psql', [gw.dsn('app', user), '-XAtc', sql], { env: { ...env, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' }, timeoutMs: 30_000 });
}

interface SessionOut { id: string; protocol: string; identity: { name: string; kind: string; claims: Record<string, string> | null }; authMethod: string | null; endedAt: string | null; endReason: string | null; clientAddr: string }

async function sessions(...args: string[]): Promise<SessionOut[]> {
  return JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--limit', '500', ...args])) as SessionOut[];
}

async function endedSessions(filter: (s: SessionOut) => boolean, count: number): Promise<SessionOut[]> {
  let rows: SessionOut[] = [];
  for (let i = 0; i < 100; i++) {
    rows = (await sessions()).filter(filter);
    if (rows.length >= count && rows.every((s) => s.endedAt !== null)) return rows;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`sessions: ${JSON.stringify(rows)}`);
}

interface IdentityOut { id: string; name: string; kind: string; authSource?: string; claims?: Record<string, string>; externalGroups?: string[] }

async function identity(name: string): Promise<IdentityOut | undefined> {
  return (JSON.parse(await gw.cliOk(['identity', 'list', '--json'])) as IdentityOut[]).find((i) => i.name === name);
}

/** A refused sign-in: what the browser shows and what the waiting terminal prints. */
function assertRefusedPage(page: Page, message: string): void {
  assert.equal(page.status >= 400, true, `status ${page.status}: ${pageText(page.body)}`);
  assert.match(pageText(page.body), /^Sign-in refused /);
  assert.ok(pageText(page.body).includes(message), `the page says: ${pageText(page.body)}`);
}

async function assertCliRefused(exit: Promise<{ code: number | null; stderr: string; stdout: string }>, message: string): Promise<void> {
  const r = await exit;
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr.trim().split('\n').pop(), `gatehouse: sign-in refused: ${message}`);
}

// ---- the tests -------------------------------------------------------------------------------

test('a person signs in with gatehouse login, connects with psql, and the session says who they were and how', async () => {
  const home = configDir('alice');
  const { confirmation, page, cli, code } = await signIn('alice', home);

  // After the provider's redirect back: where the sign-in started, and the terminal's code asked for.
  assert.equal(confirmation.status, 200, pageText(confirmation.body));
  assert.ok(isCallback(new URL(confirmation.url)));
  assert.ok(pageText(confirmation.body).includes(`corp says you are alice. This sign-in was started with gatehouse login from the address 127.0.0.1 calling itself ${hostname()} (its own claim)`),
    pageText(confirmation.body));
  assert.ok(!confirmation.body.includes(code), 'the page never shows the code it asks for');
  assert.equal(page.status, 200, pageText(page.body));
  assert.match(pageText(page.body), /Signed in as alice through corp\. Your terminal receives its token now\./);

  // The terminal: the link and code first, then who signed in; nothing on stdout.
  assert.equal(cli.code, 0, cli.stderr);
  assert.equal(cli.stdout, '');
  assert.match(cli.stderr, new RegExp(`To sign in through corp, open this link in a browser:\\n\\n    ${gw.url}/login/\\S+\\n\\nor go to ${gw.url}/login and enter the code ${code}\\.`));
  assert.match(cli.stderr, /signed in as alice \(human\) until \S+; groups: dba, dev\n/);

  // The token is stored for the CLI: 0600, keyed by the gateway, which becomes the default.
  const file = path.join(home, 'credentials.json');
  assert.equal(statSync(file).mode & 0o777, 0o600);
  const stored = storedCredentials(home);
  assert.equal(stored.default, gw.url);
  const { token, identity: name, expiresAt } = stored.gateways[gw.url];
  secrets.push(token);
  assert.equal(name, 'alice');
  const ttl = Date.parse(expiresAt) - Date.now();
  assert.ok(ttl > 7.9 * 3600_000 && ttl <= 8 * 3600_000, `token_ttl 8h: ${expiresAt}`);

  // The identity: a person (human), its provider, claims, and groups from the groups claim.
  const alice = (await identity('alice'))!;
  assert.equal(alice.kind, 'human');
  assert.equal(alice.authSource, 'oidc:corp');
  assert.deepEqual(alice.externalGroups, ['dba', 'dev']);
  assert.equal(alice.claims?.iss, corp.issuer);
  assert.equal(alice.claims?.sub, 'alice');
  assert.equal(alice.claims?.email, 'alice@example.com');
  assert.equal(alice.claims?.aud, corp.clientId);
  assert.equal(alice.claims?.nonce, undefined, 'per-sign-in values are not kept');

  // Later commands use the stored token (no GATEHOUSE_TOKEN, no --gateway): alice is no administrator.
  const whoami = await run(process.execPath, [GATEHOUSE_BIN, 'identity', 'list'], { env: personEnv({ GATEHOUSE_CONFIG_DIR: home }), timeoutMs: 30_000 });
  assert.equal(whoami.code, 1);
  assert.match(whoami.stderr, /^gatehouse: identity "alice" is not an administrator/);

  // psql through the gateway with the token: allowed through the IdP group dba.
  const q = await psql('alice', token, 'select 40 + 2');
  assert.equal(q.code, 0, q.stderr);
  assert.equal(q.stdout.trim(), '42');
  const [s] = await endedSessions((x) => x.protocol === 'postgres' && x.identity.name === 'alice', 1);
  assert.equal(s.identity.kind, 'human');
  assert.equal(s.authMethod, 'token');
  assert.equal(s.identity.claims?.iss, corp.issuer);
  assert.equal(s.identity.claims?.groups, '["dba","dev"]');
  const show = await gw.cliOk(['sessions', 'show', s.id]);
  assert.match(show, /identity\s+alice \(human\)\nauth\s+token\nclaims\s+aud=gatehouse\n/);
  assert.match(show, /^\s+email=alice@example\.com$/m);
  assert.match(show, /^\s+groups=\["dba","dev"\]$/m);
  const why = await gw.cli(['access', 'check', 'alice', 'app']);
  assert.equal(why.code, 0, why.stderr);
  assert.match(why.stdout, /^allowed: /);
  assert.match(why.stdout, /via:\s+group:dba has connect on app/);
  assert.match(why.stdout, /groups:\s+dba \(external\), dev \(external\)/);

  // The sign-in itself is recorded too: who, through which provider, from where.
  const [login] = await endedSessions((x) => x.protocol === 'login' && x.identity.name === 'alice', 1);
  assert.equal(login.authMethod, 'oidc:corp');
  assert.equal(login.endReason, 'signed in');
  assert.equal(login.clientAddr, '127.0.0.1');
});

test('signing in again is the same identity, with the groups the provider says now; the code page leads to the same sign-in', async () => {
  const before = (await identity('alice'))!;
  accounts.alice.claims.groups = ['dba', 'oncall'];
  try {
    const home = configDir('alice-2');
    const cli = startCliLogin(['--gateway', `${gw.url}/`, 'login', '--no-browser', '--print-token', '--provider', 'corp'], personEnv({ GATEHOUSE_CONFIG_DIR: home }));
    const { code } = await cli.link;
    // On another device: the short URL and the code instead of the long link.
    const browser = new Browser();
    const form = await browser.open(`${gw.url}/login`);
    assert.match(pageText(form.body), /Enter the code gatehouse login printed in your terminal\./);
    const wrong = await browser.submit(form, browser.form(form), { code: 'BBBB-BBBB' });
    assert.equal(wrong.status, 400);
    assert.match(pageText(wrong.body), /no sign-in is waiting for this code: check it, or run gatehouse login again/);
    const atProvider = await browser.submit(form, browser.form(form), { code: code.toLowerCase().replace('-', ' ') });
    const page = await confirmSignIn(browser, await signInAtProvider(browser, atProvider, 'alice'), code);
    assert.match(pageText(page.body), /Signed in as alice through corp/);
    const r = await cli.exit;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /signed in as alice \(human\) until \S+; groups: dba, oncall\n/);
    const token = r.stdout.trim();
    secrets.push(token);
    assert.equal(token, storedCredentials(home).gateways[gw.url].token, '--print-token prints the stored token; the gateway is stored without its trailing slash');

    const after = (await identity('alice'))!;
    assert.equal(after.id, before.id, 'the same person at the same provider is the same identity');
    assert.deepEqual(after.externalGroups, ['dba', 'oncall']);
    assert.equal(after.claims?.groups, '["dba","oncall"]');
  } finally {
    accounts.alice.claims.groups = ['dba', 'dev'];
  }
});

test('gatehouse logout revokes the stored token at the gateway and forgets it; psql is refused afterwards', async () => {
  const home = configDir('alice-logout');
  const { cli } = await signIn('alice', home);
  assert.equal(cli.code, 0, cli.stderr);
  const { token } = storedCredentials(home).gateways[gw.url];
  secrets.push(token);
  assert.equal((await psql('alice', token, 'select 1')).code, 0);

  const out = await run(process.execPath, [GATEHOUSE_BIN, 'logout'], { env: personEnv({ GATEHOUSE_CONFIG_DIR: home }), timeoutMs: 30_000 });
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stderr.trim(), `signed out of ${gw.url}: alice's token is revoked and forgotten`);
  assert.deepEqual(storedCredentials(home).gateways, {});

  const refused = await psql('alice', token, 'select 1');
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /password authentication failed for user "alice"/);
  const tokens = JSON.parse(await gw.cliOk(['token', 'list', '--json'])) as Array<{ identity: string; state: string }>;
  assert.ok(tokens.filter((t) => t.identity === 'alice').some((t) => t.state === 'revoked'));

  const again = await run(process.execPath, [GATEHOUSE_BIN, 'logout'], { env: personEnv({ GATEHOUSE_CONFIG_DIR: home }), timeoutMs: 30_000 });
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^gatehouse: not signed in to http:\/\/127\.0\.0\.1:\d+ \(nothing in .*credentials\.json\)/);
  const noToken = await run(process.execPath, [GATEHOUSE_BIN, 'identity', 'list'], { env: personEnv({ GATEHOUSE_CONFIG_DIR: home }), timeoutMs: 30_000 });
  assert.match(noToken.stderr, /no token: sign in with gatehouse login, set GATEHOUSE_TOKEN, or pass --token/);
});

test('refusals: state, nonce, code exchange, the provider saying no, ID token signature — in the browser and in the terminal', async () => {
  const run1 = async (tamper: { callback?: (u: URL) => void; authorization?: (u: URL) => void; provider?: string }, message: string): Promise<void> => {
    const cli = startCliLogin(['--gateway', gw.url, 'login', '--no-browser', ...(tamper.provider ? ['--provider', tamper.provider] : [])],
      personEnv({ GATEHOUSE_CONFIG_DIR: configDir('refusals') }));
    const { url } = await cli.link;
    const browser = new Browser();
    let page: Page;
    if (tamper.provider === 'rogue') {
      let first = await browser.open(url);
      first = await signInAtProvider(browser, first, 'alice');
      page = first;
    } else {
      const callback = await toCallback('alice', url, browser, tamper.authorization);
      tamper.callback?.(callback);
      page = await browser.open(callback.href);
    }
    assertRefusedPage(page, message);
    await assertCliRefused(cli.exit, message);
  };

  // The answer carries another sign-in's state (a forged or swapped redirect).
  await run1({ callback: (u) => u.searchParams.set('state', 'x'.repeat(43)) },
    'the answer from the identity provider does not belong to the sign-in started in this browser (state mismatch)');
  // The authorization request was changed on its way to the provider: the ID token has another nonce.
  await run1({ authorization: (u) => u.searchParams.set('nonce', 'attacker-chosen-nonce') }, 'the ID token was not issued for this sign-in (nonce mismatch)');
  // A made-up authorization code: the provider refuses to redeem it.
  await run1({ callback: (u) => u.searchParams.set('code', 'made-up-code') }, 'the identity provider refused the authorization code: invalid_grant (grant request is invalid)');
  // ID tokens whose signature does not verify with the keys the provider publishes.
  await run1({ provider: 'rogue' }, 'the ID token\'s signature does not verify with the identity provider\'s published keys');

  // The person cancels at the provider.
  const cli = startCliLogin(['--gateway', gw.url, 'login', '--no-browser'], personEnv({ GATEHOUSE_CONFIG_DIR: configDir('refusals') }));
  const browser = new Browser();
  const login = await browser.open((await cli.link).url);
  const cancelled = await browser.submit(login, browser.form(login, '/abort'));
  const message = 'the identity provider refused the sign-in: access_denied (the person cancelled the sign-in)';
  assertRefusedPage(cancelled, message);
  await assertCliRefused(cli.exit, message);
});

test('refusals: a callback opened in another browser, a replayed callback, an unknown link, a taken name, an unknown provider', async () => {
  const cli = startCliLogin(['--gateway', gw.url, 'login', '--no-browser'], personEnv({ GATEHOUSE_CONFIG_DIR: configDir('elsewhere') }));
  const { url, code } = await cli.link;
  const browser = new Browser();
  const callback = await toCallback('alice', url, browser);
  // Someone else's browser (no sign-in cookie) gets the redirect: refused, and the code is not spent.
  const elsewhere = await new Browser().open(callback.href);
  assertRefusedPage(elsewhere, 'this browser did not start the sign-in: open the link gatehouse login printed in the browser you sign in with');
  const ok = await confirmSignIn(browser, await browser.open(callback.href), code);
  assert.match(pageText(ok.body), /Signed in as alice through corp\./);
  const r = await cli.exit;
  assert.equal(r.code, 0, r.stderr);
  secrets.push(storedCredentials(configDir('elsewhere')).gateways[gw.url].token);

  // The same answer again (reload, or replay): the sign-in is finished.
  const replay = await browser.open(callback.href);
  assertRefusedPage(replay, 'this sign-in is finished already (an answer from the identity provider was used before: a replay, or the page was reloaded)');
  // The link of a finished sign-in, and a link that never was.
  assertRefusedPage(await browser.open(url), 'this sign-in is finished already');
  const unknown = await browser.open(`${gw.url}/login/not-a-sign-in`);
  assert.equal(unknown.status, 410);
  assert.match(pageText(unknown.body), /this sign-in link is not known \(mistyped, or long expired\): run gatehouse login again/);

  // A username that is the name of another identity (here the administrator) never takes it over.
  const taken = startCliLogin(['--gateway', gw.url, 'login', '--no-browser'], personEnv({ GATEHOUSE_CONFIG_DIR: configDir('mallory') }));
  const other = new Browser();
  const page = await signInAtProvider(other, await other.open((await taken.link).url), 'mallory');
  const message = 'identity name "admin" belongs to another identity (not this person at this identity provider); an administrator must rename or remove it';
  assertRefusedPage(page, message);
  await assertCliRefused(taken.exit, message);

  const nope = await startCliLogin(['--gateway', gw.url, 'login', '--no-browser', '--provider', 'nope'], personEnv({ GATEHOUSE_CONFIG_DIR: configDir('nope') })).exit;
  assert.equal(nope.code, 1);
  assert.equal(nope.stderr.trim(), 'gatehouse: no identity provider "nope" (this gateway has: corp, rogue)');
});

test('a sign-in link sent to someone else gets the sender nothing: the token waits for the terminal\'s code, wrong codes and a cancel refuse it', async () => {
  // The attacker starts a sign-in and sends the link; the victim, signed in at the provider, opens it.
  const attacker = startCliLogin(['--gateway', gw.url, 'login', '--no-browser'], personEnv({ GATEHOUSE_CONFIG_DIR: configDir('phisher') }));
  const { url } = await attacker.link;
  const victim = new Browser();
  const confirmation = await signInAtProvider(victim, await victim.open(url), 'alice');
  assert.match(pageText(confirmation.body), /If you did not, or you were sent this link, cancel/);
  // The provider vouched for alice, yet the attacker's terminal keeps waiting.
  const early = await Promise.race([attacker.exit.then(() => 'exited'), new Promise((r) => setTimeout(() => r('waiting'), 2500))]);
  assert.equal(early, 'waiting');
  // A confirmation posted from another page (no form secret) is refused and changes nothing.
  const forged = await new Browser().request('POST', `${gw.url}/login/confirm`, new URLSearchParams({ login: new URL(url).pathname.split('/').pop()!, secret: 'guess', code: 'BCDF-GHJK' }).toString());
  assertRefusedPage(forged, 'this confirmation does not belong to a sign-in this browser finished: run gatehouse login again');
  // The victim guesses: each wrong code shows the form again, the fifth refuses the sign-in.
  let page = confirmation;
  for (let left = 4; left >= 1; left--) {
    page = await confirmSignIn(victim, page, 'BBBB-BBBB');
    assert.equal(page.status, 400);
    assert.match(pageText(page.body), new RegExp(`That is not the code the terminal shows \\(${left} tr(y|ies) left\\)`));
  }
  const refused = await confirmSignIn(victim, page, 'BBBB-BBBB');
  assertRefusedPage(refused, 'the code was entered wrong 5 times');
  await assertCliRefused(attacker.exit, 'the code was entered wrong 5 times');

  // Another sent link: the victim cancels.
  const second = startCliLogin(['--gateway', gw.url, 'login', '--no-browser'], personEnv({ GATEHOUSE_CONFIG_DIR: configDir('phisher') }));
  const b2 = new Browser();
  const cancelled = await confirmSignIn(b2, await signInAtProvider(b2, await b2.open((await second.link).url), 'alice'), '', 'cancel');
  const why = 'the person signed in at the identity provider said they did not start this sign-in';
  assertRefusedPage(cancelled, why);
  await assertCliRefused(second.exit, why);
  // A confirmation page kept open is spent too.
  assertRefusedPage(await confirmSignIn(b2, page, 'BBBB-BBBB'), 'this sign-in was refused already: the code was entered wrong 5 times');
});

test('the confirmation page shows a hostile host name as text', async () => {
  const res = await fetch(`${gw.url}/api/v1/login/start`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ host: '<img src=x onerror=alert(1)>"evil' }) });
  assert.equal(res.status, 201);
  const started = await res.json() as { loginUrl: string };
  const b = new Browser();
  const page = await signInAtProvider(b, await b.open(started.loginUrl), 'alice');
  assert.ok(page.body.includes('calling itself <strong>&lt;img src=x onerror=alert(1)&gt;&quot;evil</strong>'), page.body);
  assert.ok(!page.body.includes('<img'));
  const tooLong = await fetch(`${gw.url}/api/v1/login/start`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ host: 'h'.repeat(254) }) });
  assert.equal(tooLong.status, 400);
});

test('a sign-in not finished within login_timeout expires: the link, the callback and the terminal say so', async () => {
  const config = path.join(work, 'short.yaml');
  writeConfig(config, '2s');
  const short = await startGateway(config);
  try {
    const home = configDir('slow');
    const cli = startCliLogin(['--gateway', short.url, 'login', '--no-browser'], personEnv({ GATEHOUSE_CONFIG_DIR: home }));
    const { url } = await cli.link;
    const browser = new Browser();
    const atProvider = await browser.open(url);
    await new Promise((r) => setTimeout(r, 2200));
    const message = 'the sign-in expired: it was not finished in the browser within 2s; run gatehouse login again';
    const r = await cli.exit;
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').pop(), `gatehouse: ${message}`);
    assertRefusedPage(await new Browser().open(url), 'the sign-in expired: it was started more than 2s ago; run gatehouse login again');
    // Finishing at the provider afterwards: the gateway refuses the late answer.
    const late = await signInAtProvider(browser, atProvider, 'alice');
    assertRefusedPage(late, 'the sign-in expired: it was started more than 2s ago; run gatehouse login again');
    assertRefusedPage(await browser.open(url), 'this sign-in was refused already: the sign-in expired');
  } finally {
    await short.stop();
    corp.registerClient(`${gw.url}/login/oidc/callback`);
    rogue.registerClient(`${gw.url}/login/oidc/callback`);
  }
});

test('every sign-in is recorded (refusals with their reason); the gateway log holds no token', async () => {
  const logins = (await sessions()).filter((s) => s.protocol === 'login');
  const refused = logins.filter((s) => s.endReason?.startsWith('refused: '));
  assert.ok(logins.some((s) => s.endReason === 'signed in' && s.identity.name === 'alice'));
  for (const reason of ['state mismatch', 'nonce mismatch', 'invalid_grant', 'signature does not verify', 'access_denied', 'this browser did not start', 'finished already', 'belongs to another identity']) {
    assert.ok(refused.some((s) => s.endReason!.includes(reason)), `a refused sign-in recorded for: ${reason}`);
  }
  for (const s of refused) {
    assert.equal(s.identity.kind, 'unknown');
    assert.match(s.authMethod ?? '', /^oidc(:corp|:rogue)?$/, 'oidc alone when the answer named no sign-in of this gateway');
  }
  const detail = JSON.parse(await gw.cliOk(['sessions', 'show', refused[0].id, '--json'])) as { events: Array<{ type: string; data: { message?: string } }> };
  assert.equal(detail.events.find((e) => e.type === 'access.denied')?.data.message, refused[0].endReason!.replace(/^refused: /, ''));

  const logs = gw.logs();
  assert.match(logs, /"msg":"signed in"/);
  assert.match(logs, /"msg":"sign-in refused"/);
  assert.ok(secrets.length >= 3);
  for (const s of secrets) assert.ok(!logs.includes(s), 'a token is in the log');
});
