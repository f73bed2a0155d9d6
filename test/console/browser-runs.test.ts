// An agent run on one timeline, in Chromium: a CI job (a local OIDC issuer signs its ID token)
// exchanges it for a run identity, runs psql and then ssh through the gateway; the console's
// Agent runs screen, given the run's claims, shows the psql statement and the ssh command of that
// run in the order they happened, each linking to its session — and nothing of another run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { chromium, type Browser } from 'playwright-core';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { runSsh } from '../support/ssh-client.ts';
import { startSshWorld, type SshWorld } from '../ssh/helpers.ts';

const CHROMIUM = '/usr/bin/chromium';

let issuer: Server;
let issuerUrl = '';
let sign: (claims: Record<string, unknown>) => Promise<string>;
let w: SshWorld;
let cluster: PgCluster;
let browser: Browser;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install chromium (.ci/run does)`);
  // A CI platform's OIDC issuer: discovery and JWKS over HTTP, RS256 ID tokens.
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'ci-1', alg: 'RS256', use: 'sig' };
  issuer = createServer((req, res) => {
    const p = new URL(req.url!, 'http://x').pathname;
    const body = p === '/.well-known/openid-configuration' ? { issuer: issuerUrl, jwks_uri: `${issuerUrl}/keys`, id_token_signing_alg_values_supported: ['RS256'] }
      : p === '/keys' ? { keys: [jwk] } : null;
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(body ?? { error: 'not found' }));
  });
  await new Promise<void>((r) => issuer.listen(0, '127.0.0.1', () => r()));
  issuerUrl = `http://127.0.0.1:${(issuer.address() as { port: number }).port}`;
  sign = (claims) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: issuerUrl, aud: 'gatehouse', iat: now, nbf: now - 5, exp: now + 600, jti: randomUUID(), ...claims })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: 'ci-1' }).sign(privateKey);
  };
  cluster = await startPgCluster();
  const config = join(await import('node:os').then((os) => os.tmpdir()), `gatehouse-runs-${randomUUID()}.yaml`);
  writeFileSync(config, `
workload_identity:
  policies:
    - name: ci
      issuer: ${issuerUrl}
      kind: github
      audience: gatehouse
      claims: { repository: org/app }
      grants: [app, box]
      max_ttl: 15m
      identity_name: "ci-{repository}-{run_id}"
`);
  w = await startSshWorld({ gatewayArgs: ['--config', config] });
  await w.gw.cliOk(['connection', 'add', 'app', '--type', 'postgres', '--host', cluster.host, '--port', String(cluster.port), '--database', 'app',
    '--user', 'scram_user', '--password-env', 'TARGET_PASSWORD'], { env: { TARGET_PASSWORD: 'scram-secret' } });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
});

after(async () => {
  await browser?.close();
  await w?.stop();
  await cluster?.stop();
  issuer?.close();
});

/** One CI job: its ID token exchanged for a run identity's token, then psql and ssh as that identity. */
async function job(runId: string, sql: string, command: string): Promise<void> {
  const oidc = await sign({ sub: 'repo:org/app:ref:refs/heads/main', repository: 'org/app', ref: 'refs/heads/main', run_id: runId, workflow: 'deploy' });
  const out = JSON.parse(await w.gw.cliOk(['login', '--oidc-token', oidc, '--json'])) as { token: string; identity: { name: string } };
  const name = out.identity.name;
  const psql = spawnSync('psql', [w.gw.dsn('app', name), '-X', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: { ...process.env, PGPASSWORD: out.token }, encoding: 'utf8' });
  assert.equal(psql.status, 0, psql.stderr);
  const ssh = await runSsh({ port: w.gw.sshPort, user: 'box', password: out.token }, command);
  assert.equal(ssh.code, 0, ssh.stderr);
}

test('Agent runs: one run\'s psql statement and ssh command on one timeline, in order; another run\'s are not there', async () => {
  await job('9001', "SELECT 'run-9001-step-1' AS step", 'echo run-9001-step-2');
  await job('9002', "SELECT 'run-9002-step-1' AS step", 'echo run-9002-step-2');
  const page = await browser.newPage();
  page.setDefaultTimeout(20_000);
  await page.goto(w.gw.url);
  await page.getByLabel('Token').fill(w.gw.adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('link', { name: 'Agent runs' }).click();
  await page.getByLabel('Run claims').fill('run_id=9001');
  await page.getByRole('button', { name: 'Show run' }).click();
  const items = page.locator('ol.timeline.run li');
  await items.filter({ hasText: 'echo run-9001-step-2' }).waitFor();
  const texts = await items.allInnerTexts();
  const sqlAt = texts.findIndex((t) => t.includes("SELECT 'run-9001-step-1'"));
  const sshAt = texts.findIndex((t) => t.includes('echo run-9001-step-2'));
  assert.ok(sqlAt >= 0 && sshAt > sqlAt, `psql before ssh on one timeline: ${JSON.stringify(texts)}`);
  assert.deepEqual(await items.filter({ hasText: "SELECT 'run-9001" }).first().getAttribute('data-protocol'), 'postgres');
  assert.deepEqual(await items.filter({ hasText: 'echo run-9001' }).first().getAttribute('data-protocol'), 'ssh');
  assert.ok(!texts.some((t) => t.includes('run-9002')), 'nothing of the other run');
  // GATEHOUSE_SCREENSHOTS=DIR: docs/console.md's picture of this screen.
  if (process.env.GATEHOUSE_SCREENSHOTS) {
    await page.setViewportSize({ width: 1280, height: 500 });
    await page.screenshot({ path: join(process.env.GATEHOUSE_SCREENSHOTS, 'agent-run.png') });
  }
  await page.close();
});
