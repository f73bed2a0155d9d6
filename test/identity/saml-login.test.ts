// People signing in with SAML 2.0, end to end: a test identity provider that signs real
// assertions (xml-crypto), a real gateway as the service provider, `gatehouse login` as a child
// process, the browser's part played with plain HTTP (the AuthnRequest redirect, the IdP's login
// form, the HTTP-POST binding's form posted to the ACS), psql with the stored token, and the
// attacks a service provider must refuse — unsigned assertions, signature wrapping, wrong
// audience, recipient or destination, expired or early assertions, untrusted keys, replays —
// each with the words the person sees in the browser and in the terminal.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { selfSignedRsa, startSamlIdp, type AnswerOptions, type SigningMaterial, type TestAccount, type TestSamlIdp } from '../support/saml-idp.ts';
import { Browser, pageText, type Page } from '../support/browser.ts';
import { confirmSignIn, personEnv, startCliLogin } from '../support/cli-login.ts';

const accounts: Record<string, TestAccount> = {
  bob: { password: 'bob-pw', nameId: 'u-1001', attributes: { uid: 'bob', email: 'bob@example.com', groups: ['dba', 'ops'] } },
  // A real account at the IdP, out to become someone else.
  mallory: { password: 'mallory-pw', nameId: 'u-6666', attributes: { uid: 'mallory', email: 'mallory@example.com', groups: ['interns'] } },
  trudy: { password: 'trudy-pw', nameId: 'u-7777', attributes: { uid: 'admin.evil', groups: [] } },
};

let pg: PgCluster;
let gw: TestGateway;
let idp: TestSamlIdp;
let evil: SigningMaterial;
let work: string;
let acs: string;
let spEntityId: string;

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-saml-login-'));
  [idp, evil] = await Promise.all([startSamlIdp(accounts), selfSignedRsa('Evil IdP')]);
  const certFile = path.join(work, 'idp.pem');
  writeFileSync(certFile, idp.material.certPem);
  const config = path.join(work, 'gatehouse.yaml');
  writeFileSync(config, `
sso:
  saml:
    - name: corp-saml
      entry_point: ${idp.ssoUrl}
      idp_cert: idp.pem
      idp_entity_id: ${idp.entityId}
      username_attribute: uid
      groups_attribute: groups
      clock_skew: 30s
`);
  [pg, gw] = await Promise.all([startPgCluster(), startTestGateway({ args: ['--config', config] })]);
  acs = `${gw.url}/login/saml/acs`;
  spEntityId = `${gw.url}/login/saml/metadata`;
  await gw.cliOk(['connection', 'add', 'app', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port), '--database', 'app',
    '--user', 'scram_user', '--password-env', 'TARGET_PASSWORD'], { env: { TARGET_PASSWORD: 'scram-secret' } });
  await gw.cliOk(['group', 'add', 'dba']);
  await gw.cliOk(['grant', 'group:dba', 'app']);
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  await idp?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

const configDir = (name: string): string => path.join(work, `home-${name}`);

interface Flow { cli: ReturnType<typeof startCliLogin>; code: string; browser: Browser; idpForm: Page; acsForm: Page; samlResponse: string }

/** `gatehouse login`, then the browser through the IdP's login up to the HTTP-POST form it would auto-submit. */
async function toAcsForm(account: string, answer: AnswerOptions = {}): Promise<Flow> {
  const cli = startCliLogin(['--gateway', gw.url, 'login', '--no-browser'], personEnv({ GATEHOUSE_CONFIG_DIR: configDir(account) }));
  const { url, code } = await cli.link;
  const browser = new Browser();
  const idpForm = await browser.open(url);
  assert.ok(idpForm.url.startsWith(idp.ssoUrl), `the link leads to the IdP: ${idpForm.url}`);
  idp.next = answer;
  const acsForm = await browser.submit(idpForm, browser.form(idpForm), { login: account, password: accounts[account].password });
  const form = browser.form(acsForm);
  assert.equal(form.action, acs, 'the IdP posts to the ACS URL of the request');
  return { cli, code, browser, idpForm, acsForm, samlResponse: Buffer.from(form.fields.SAMLResponse, 'base64').toString('utf8') };
}

/** The browser posts the (possibly changed) Response to the ACS, as the form would. */
function post(flow: Flow, xml = flow.samlResponse): Promise<Page> {
  return flow.browser.submit(flow.acsForm, flow.browser.form(flow.acsForm), { SAMLResponse: Buffer.from(xml).toString('base64') });
}

function assertRefusedPage(page: Page, message: string | RegExp): void {
  assert.ok(page.status >= 400, `status ${page.status}: ${pageText(page.body)}`);
  assert.match(pageText(page.body), /^Sign-in refused /);
  const reason = pageText(/<p class="refused">([\s\S]*?)<\/p>/.exec(page.body)?.[1] ?? '');
  if (typeof message === 'string') assert.equal(reason, message);
  else assert.match(reason, message);
}

async function assertCliRefused(flow: Flow, message: string | RegExp): Promise<void> {
  const r = await flow.cli.exit;
  assert.equal(r.code, 1, r.stderr);
  const last = r.stderr.trim().split('\n').pop()!;
  if (typeof message === 'string') assert.equal(last, `gatehouse: sign-in refused: ${message}`);
  else assert.match(last.replace(/^gatehouse: sign-in refused: /, ''), message);
}

/** Refused in the browser and in the terminal, with the same words. */
async function refused(flow: Flow, xml: string | undefined, message: string | RegExp): Promise<void> {
  assertRefusedPage(await post(flow, xml), message);
  await assertCliRefused(flow, message);
}

// Pieces of a signed Response, for building the attacks.
const assertionOf = (xml: string): string => /<saml:Assertion\b[\s\S]*<\/saml:Assertion>/.exec(xml)![0];
const signatureOf = (xml: string): string => /<ds:Signature\b[\s\S]*?<\/ds:Signature>/.exec(xml)![0];
const idOf = (assertion: string): string => /\bID="([^"]+)"/.exec(assertion)![1];
/** The same assertion, unsigned, saying it is someone else. */
function evilTwin(assertion: string, id: string): string {
  return assertion.replace(signatureOf(assertion), '').replace(/\bID="[^"]+"/, `ID="${id}"`)
    .replace(/>u-6666</, '>u-1001<').replace(/>mallory</, '>bob<').replace(/>interns</, '>dba<');
}

interface SessionOut { id: string; protocol: string; identity: { name: string; kind: string; claims: Record<string, string> | null }; authMethod: string | null; endedAt: string | null; endReason: string | null }

async function endedSessions(filter: (s: SessionOut) => boolean, count: number): Promise<SessionOut[]> {
  let rows: SessionOut[] = [];
  for (let i = 0; i < 100; i++) {
    rows = (JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--limit', '500'])) as SessionOut[]).filter(filter);
    if (rows.length >= count && rows.every((s) => s.endedAt !== null)) return rows;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`sessions: ${JSON.stringify(rows)}`);
}

let bobsResponse: Flow;

// ---- the tests -------------------------------------------------------------------------------

test('a person signs in with SAML, connects with psql, and the session says who they were and how', async () => {
  const flow = await toAcsForm('bob');
  bobsResponse = flow;
  // What the gateway asked for: an AuthnRequest to the IdP, answered at the ACS URL.
  const request = idp.requests.at(-1)!;
  assert.match(request, new RegExp(`AssertionConsumerServiceURL="${acs}"`));
  assert.match(request, new RegExp(`Destination="${idp.ssoUrl}"`));
  assert.match(request, new RegExp(`<saml:Issuer[^>]*>${spEntityId}</saml:Issuer>`));

  const confirmation = await post(flow);
  assert.equal(confirmation.status, 200, pageText(confirmation.body));
  assert.match(pageText(confirmation.body), /corp-saml says you are bob\. This sign-in was started with gatehouse login from the address 127\.0\.0\.1/);
  const page = await confirmSignIn(flow.browser, confirmation, flow.code);
  assert.match(pageText(page.body), /Signed in as bob through corp-saml\. Your terminal receives its token now\./);
  const r = await flow.cli.exit;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /signed in as bob \(human\) until \S+; groups: dba, ops\n/);

  const bob = (JSON.parse(await gw.cliOk(['identity', 'list', '--json'])) as Array<{ name: string; kind: string; authSource?: string; claims?: Record<string, string>; externalGroups?: string[] }>)
    .find((i) => i.name === 'bob')!;
  assert.equal(bob.kind, 'human');
  assert.equal(bob.authSource, 'saml:corp-saml');
  assert.deepEqual(bob.externalGroups, ['dba', 'ops']);
  assert.equal(bob.claims?.name_id, 'u-1001');
  assert.equal(bob.claims?.issuer, idp.entityId);
  assert.equal(bob.claims?.email, 'bob@example.com');
  assert.equal(bob.claims?.audience, spEntityId);

  const token = (JSON.parse(readFileSync(path.join(configDir('bob'), 'credentials.json'), 'utf8')) as { gateways: Record<string, { token: string }> }).gateways[gw.url].token;
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  const q = await run('psql', [gw.dsn('app', 'bob'), '-XAtc', 'select current_user'], { env: { ...env, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' }, timeoutMs: 30_000 });
  assert.equal(q.code, 0, q.stderr);
  assert.equal(q.stdout.trim(), 'scram_user');
  const [s] = await endedSessions((x) => x.protocol === 'postgres' && x.identity.name === 'bob', 1);
  assert.equal(s.identity.kind, 'human');
  assert.equal(s.authMethod, 'token');
  assert.equal(s.identity.claims?.name_id, 'u-1001');
  assert.equal(s.identity.claims?.groups, '["dba","ops"]');
  const show = await gw.cliOk(['sessions', 'show', s.id]);
  assert.match(show, /identity\s+bob \(human\)\nauth\s+token\n/);
  assert.match(show, new RegExp(`^\\s+issuer=${idp.entityId}$`, 'm'));
  const [login] = await endedSessions((x) => x.protocol === 'login' && x.identity.name === 'bob', 1);
  assert.equal(login.authMethod, 'saml:corp-saml');
  assert.equal(login.endReason, 'signed in');

  // The SP metadata an IdP administrator registers the gateway with.
  const metadata = await (await fetch(`${gw.url}/login/saml/metadata`)).text();
  assert.match(metadata, new RegExp(`entityID="${spEntityId}"`));
  assert.match(metadata, new RegExp(`Location="${acs}"`));
  assert.match(metadata, /WantAssertionsSigned="true"/);
});

test('a replayed SAML response is refused', async () => {
  assertRefusedPage(await post(bobsResponse), 'this sign-in is finished already (an answer from the identity provider was used before: a replay, or the page was reloaded)');
});

test('unsigned assertions are refused, also inside a signed Response', async () => {
  await refused(await toAcsForm('mallory', { sign: 'none' }), undefined, 'the SAML assertion is not signed');
  await refused(await toAcsForm('mallory', { sign: 'response' }), undefined, 'the SAML assertion is not signed');
});

test('signature wrapping is refused: an added assertion, the signed assertion moved, a duplicated ID, a changed assertion', async () => {
  // A second, unsigned assertion next to the signed one.
  let flow = await toAcsForm('mallory');
  let signed = assertionOf(flow.samlResponse);
  await refused(flow, flow.samlResponse.replace(signed, evilTwin(signed, '_evil') + signed), 'the SAML response holds more than one assertion (refused: signature wrapping)');

  // The signed assertion moved inside an evil one that carries a copy of its signature.
  flow = await toAcsForm('mallory');
  signed = assertionOf(flow.samlResponse);
  let evilOne = evilTwin(signed, '_evil').replace(/(<\/saml:Issuer>)/, `$1${signatureOf(signed)}`).replace(/<\/saml:Assertion>$/, `<saml:Advice>${signed}</saml:Advice></saml:Assertion>`);
  await refused(flow, flow.samlResponse.replace(signed, evilOne), 'the assertion\'s signature covers another element than the assertion (refused: signature wrapping)');

  // The evil assertion takes the signed one's ID; the signed one hides in the Response's Extensions.
  flow = await toAcsForm('mallory');
  signed = assertionOf(flow.samlResponse);
  evilOne = evilTwin(signed, idOf(signed)).replace(/(<\/saml:Issuer>)/, `$1${signatureOf(signed)}`);
  const wrapped = flow.samlResponse.replace(signed, evilOne).replace(/(<\/saml:Issuer>)/, `$1<samlp:Extensions>${signed}</samlp:Extensions>`);
  await refused(flow, wrapped, 'two elements of the SAML response carry the signed ID (refused: signature wrapping)');

  // The signed assertion itself edited to name someone else.
  flow = await toAcsForm('mallory');
  await refused(flow, flow.samlResponse.replace('>u-6666<', '>u-1001<').replace('>mallory<', '>bob<'),
    'the SAML assertion\'s signature does not verify: it was changed after signing, or signed by another key');
});

test('an XML comment inside a signed value does not cut it short: the signed text is who signs in', async () => {
  const flow = await toAcsForm('trudy');
  const page = await confirmSignIn(flow.browser, await post(flow, flow.samlResponse.replace('>admin.evil<', '>admin<!---->.evil<')), flow.code);
  assert.match(pageText(page.body), /Signed in as admin\.evil through corp-saml/);
  assert.equal((await flow.cli.exit).code, 0);
});

test('assertions signed by another key or issuer, for another audience, recipient or destination, or outside their validity are refused', async () => {
  await refused(await toAcsForm('mallory', { signer: evil }), undefined, 'the SAML assertion is signed with an untrusted certificate (CN=Evil IdP), not the configured idp_cert');
  // The trusted key, but another IdP's name (one signing key shared by several tenants).
  await refused(await toAcsForm('mallory', { issuer: 'https://other-tenant.example/idp' }), undefined,
    `the SAML assertion was issued by "https://other-tenant.example/idp", not by the configured idp_entity_id "${idp.entityId}"`);
  await refused(await toAcsForm('mallory', { audience: 'https://other.example/sp' }), undefined,
    `the SAML assertion is meant for another audience: "https://other.example/sp" (this gateway is "${spEntityId}")`);
  await refused(await toAcsForm('mallory', { recipient: 'https://other.example/acs' }), undefined,
    `the SAML assertion is for another recipient: "https://other.example/acs" (this gateway's ACS URL is "${acs}")`);
  await refused(await toAcsForm('mallory', { destination: 'https://other.example/acs' }), undefined,
    `the SAML response is addressed to another destination: "https://other.example/acs" (this gateway's ACS URL is "${acs}")`);
  await refused(await toAcsForm('mallory', { notBefore: -900, notOnOrAfter: -600 }), undefined, /^the SAML assertion has expired \(NotOnOrAfter \d{4}-\d\d-\d\dT[\d:]+Z\)$/);
  // Beyond the 30 s of clock skew allowed.
  await refused(await toAcsForm('mallory', { notBefore: 120, notOnOrAfter: 600 }), undefined, /^the SAML assertion is not valid yet \(NotBefore \d{4}-\d\d-\d\dT[\d:]+Z\)$/);
});

test('a response that answers no request of this gateway is refused, and the sign-in still waiting finishes', async () => {
  const flow = await toAcsForm('bob', { inResponseTo: '_not-a-request-of-this-gateway' });
  assertRefusedPage(await post(flow), 'the SAML response answers no sign-in this gateway started (unknown InResponseTo)');
  const unsolicited = await toAcsForm('bob', { inResponseTo: null });
  assertRefusedPage(await post(unsolicited), 'the SAML response answers no request (no InResponseTo): sign-ins must start with gatehouse login');
  // Both terminals are still waiting: the proper answer to each finishes it.
  for (const f of [flow, unsolicited]) {
    const again = await f.browser.submit(f.idpForm, f.browser.form(f.idpForm), { login: 'bob', password: 'bob-pw' });
    const page = await confirmSignIn(f.browser, await f.browser.submit(again, f.browser.form(again)), f.code);
    assert.match(pageText(page.body), /Signed in as bob through corp-saml\./);
    assert.equal((await f.cli.exit).code, 0);
  }
});

test('every refused SAML sign-in is recorded with its reason', async () => {
  const rows = await endedSessions((s) => s.protocol === 'login' && (s.endReason ?? '').startsWith('refused: '), 10);
  for (const reason of ['not signed', 'signature wrapping', 'untrusted certificate', 'not by the configured idp_entity_id', 'another audience', 'another recipient', 'another destination', 'has expired', 'not valid yet', 'unknown InResponseTo', 'finished already']) {
    assert.ok(rows.some((s) => s.endReason!.includes(reason)), `recorded: ${reason}`);
  }
  assert.ok(rows.every((s) => s.authMethod === 'saml:corp-saml' || s.authMethod === 'saml'));
});
