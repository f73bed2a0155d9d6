// Signing in with OpenID Connect when the API serves TLS (issue 12 item 10): the sign-in link, the
// redirect URI given to the provider and the callback are https on the same listener; `gatehouse
// login --gateway-fingerprint` pins the gateway, the browser side trusts its certificate as a CA,
// and later commands to that gateway use the fingerprint stored with the token.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { GATEHOUSE_BIN, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { startOidcProvider, type TestOidcProvider } from '../support/oidc-idp.ts';
import { Browser, pageText } from '../support/browser.ts';
import { confirmSignIn, personEnv, startCliLogin } from '../support/cli-login.ts';

let gw: TestGateway;
let corp: TestOidcProvider;
let work: string;
const accounts = { alice: { password: 'alice-pw', claims: { preferred_username: 'alice', groups: ['dev'] } } };

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-oidc-tls-'));
  corp = await startOidcProvider(accounts);
  const config = path.join(work, 'gatehouse.yaml');
  writeFileSync(config, `
sso:
  default_provider: corp
  oidc:
    - name: corp
      issuer: ${corp.issuer}
      client_id: ${corp.clientId}
      client_secret_env: CORP_CLIENT_SECRET
      scopes: [openid, profile]
      username_claim: preferred_username
`);
  gw = await startTestGateway({ args: ['--config', config, '--http-tls', 'on'], env: { CORP_CLIENT_SECRET: corp.clientSecret } });
  corp.registerClient(`${gw.url}/login/oidc/callback`);
  // The browser trusts the gateway's certificate the way a person's machine would trust a CA.
  tls.setDefaultCACertificates([...tls.getCACertificates('default'), readFileSync(path.join(gw.dataDir, 'tls', 'cert.pem'), 'utf8')]);
});

after(async () => {
  await gw?.stop();
  await corp?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('sign-in over https: link, provider redirect URI and callback on the TLS listener; the pin is kept for later commands', async () => {
  assert.match(gw.url, /^https:/);
  const home = path.join(work, 'home-alice');
  const cli = startCliLogin(['--gateway', gw.url, '--gateway-fingerprint', gw.apiFingerprint!, 'login', '--no-browser'], personEnv({ GATEHOUSE_CONFIG_DIR: home }));
  const { url, code } = await cli.link;
  assert.ok(url.startsWith(`${gw.url}/login/`), url);
  const browser = new Browser();
  // To the provider: the redirect URI it is told is the gateway's https callback.
  const atProvider = await browser.open(url, { stopAt: (u) => u.origin === corp.issuer });
  const authorization = new URL(atProvider.url);
  assert.equal(authorization.searchParams.get('redirect_uri'), `${gw.url}/login/oidc/callback`);
  const form = await browser.open(authorization.href);
  const confirmation = await browser.submit(form, browser.form(form), { login: 'alice', password: accounts.alice.password });
  assert.ok(confirmation.trail.some((u) => u.startsWith(`${gw.url}/login/oidc/callback?`)), `the provider sent the browser back over https: ${confirmation.trail.join(' → ')}`);
  const done = await confirmSignIn(browser, confirmation, code);
  assert.match(pageText(done.body), /Signed in as alice through corp/);
  const exit = await cli.exit;
  assert.equal(exit.code, 0, exit.stderr);

  const stored = JSON.parse(readFileSync(path.join(home, 'credentials.json'), 'utf8')) as { default: string; gateways: Record<string, { gatewayFingerprint?: string }> };
  assert.equal(stored.default, gw.url);
  assert.equal(stored.gateways[gw.url].gatewayFingerprint, gw.apiFingerprint, 'the pinned certificate is stored with the token');
  // A later command names neither gateway nor pin: it reaches the gateway over TLS with the stored ones (alice is no administrator).
  const later = await run(process.execPath, [GATEHOUSE_BIN, 'identity', 'list'], { env: personEnv({ GATEHOUSE_CONFIG_DIR: home }), timeoutMs: 30_000 });
  assert.equal(later.code, 1, later.stderr);
  assert.match(later.stderr, /^gatehouse: identity "alice" is not an administrator/);
  // And the stored pin is enforced: the same command against a file naming another pin is refused before sending.
  const tampered = JSON.parse(readFileSync(path.join(home, 'credentials.json'), 'utf8')) as typeof stored;
  tampered.gateways[gw.url].gatewayFingerprint = `SHA256:${Buffer.alloc(32, 7).toString('base64').replace(/=+$/, '')}`;
  writeFileSync(path.join(home, 'credentials.json'), JSON.stringify(tampered), { mode: 0o600 });
  const refused = await run(process.execPath, [GATEHOUSE_BIN, 'identity', 'list'], { env: personEnv({ GATEHOUSE_CONFIG_DIR: home }), timeoutMs: 30_000 });
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /presented certificate SHA256:\S+, not the pinned SHA256:/);
});
