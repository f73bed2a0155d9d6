// Signing in to the web console through the identity provider, in Chromium: a real OpenID Connect
// provider (oidc-provider), a gateway whose gatehouse.yaml trusts it, the provider's login form in
// the window the console opens, the gateway's confirmation with the code the console shows, and
// the console signed in as the person — with the sign-in's own token revoked once exchanged.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { startOidcProvider, type TestAccount, type TestOidcProvider } from '../support/oidc-idp.ts';

const CHROMIUM = '/usr/bin/chromium';
const accounts: Record<string, TestAccount> = {
  alice: { password: 'alice-pw', claims: { preferred_username: 'alice', email: 'alice@example.com', groups: ['dba'] } },
};

let gw: TestGateway;
let corp: TestOidcProvider;
let browser: Browser;
let work: string;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install chromium (.ci/run does)`);
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-console-sso-'));
  corp = await startOidcProvider(accounts);
  const config = path.join(work, 'gatehouse.yaml');
  writeFileSync(config, `
sso:
  token_ttl: 8h
  oidc:
    - name: corp
      issuer: ${corp.issuer}
      client_id: ${corp.clientId}
      client_secret_env: CORP_CLIENT_SECRET
      scopes: [openid, profile, email, groups]
      username_claim: preferred_username
      groups_claim: groups
`);
  gw = await startTestGateway({ args: ['--config', config], env: { CORP_CLIENT_SECRET: corp.clientSecret } });
  corp.registerClient(`${gw.url}/login/oidc/callback`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  await corp?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('sign in with the identity provider: the provider in a new window, the code confirmed there, the console signed in; the sign-in token is revoked', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  await page.goto(gw.url);
  const popupOpened = context.waitForEvent('page');
  await page.getByRole('button', { name: 'Sign in with corp' }).click();
  const code = (await page.getByTestId('sign-in-code').innerText()).trim();
  assert.match(code, /^[A-Z]{4}-[A-Z]{4}$/);
  const popup = await popupOpened;
  popup.setDefaultTimeout(20_000);
  await popup.locator('input[name=login]').fill('alice');
  await popup.locator('input[name=password]').fill('alice-pw');
  await popup.getByRole('button', { name: 'Sign in' }).click();
  // The gateway's confirmation page: the code the console showed.
  await popup.locator('input[name=code]').fill(code);
  await popup.getByRole('button', { name: 'Confirm' }).click();
  await popup.getByText(/signed in/i).first().waitFor();
  await popup.close();
  // The console notices, exchanges the token for its cookie and shows the person signed in.
  await page.locator('.who', { hasText: 'alice' }).waitFor();
  assert.equal(await page.evaluate('document.cookie'), '');
  // The sign-in's own token was revoked: alice holds exactly one active token, the console's.
  const tokens = JSON.parse(await gw.cliOk(['token', 'list', '--identity', 'alice', '--json'])) as Array<{ state: string }>;
  assert.deepEqual(tokens.map((t) => t.state).sort(), ['active', 'revoked']);
  await context.close();
});
