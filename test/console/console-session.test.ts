// The web console's sign-in and session, against a real gateway over HTTP: a token is exchanged
// for an HttpOnly, SameSite=Strict cookie (a token of the gateway's own, revocable, never longer
// than the one it came from); cookie requests that change state need the CSRF token and this
// API's Origin; sign-out revokes the cookie's token; wrong tokens are refused alike and
// throttled; sign-ins and sign-outs are in the admin audit log, without the token; the console's
// files are served with strict headers, and the API is described at /api/openapi.json.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let gw: TestGateway;
let dora = '';

before(async () => {
  gw = await startTestGateway();
  await gw.cliOk(['identity', 'add', 'dora', '--kind', 'human']);
  dora = (await gw.cliOk(['token', 'issue', 'dora', '--ttl', '1h'])).trim().split('\n').pop()!;
});

after(async () => {
  await gw?.stop();
});

async function signIn(token: string): Promise<{ status: number; cookie: string | null; body: Record<string, unknown>; setCookie: string | null }> {
  const res = await fetch(`${gw.url}/api/v1/console/sign-in`, { method: 'POST', headers: { 'content-type': 'application/json', origin: gw.url }, body: JSON.stringify({ token }) });
  const setCookie = res.headers.get('set-cookie');
  return { status: res.status, setCookie, cookie: setCookie ? setCookie.split(';')[0]! : null, body: (await res.json()) as Record<string, unknown> };
}

test('a token becomes an HttpOnly, SameSite=Strict session cookie; the cookie reads, and changes need the CSRF token and this origin', async () => {
  const s = await signIn(dora);
  assert.equal(s.status, 200);
  assert.match(s.setCookie!, /^gatehouse_console=[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
  assert.ok(!s.setCookie!.includes(dora), 'the cookie is not the token signed in with');
  assert.deepEqual(s.body.identity, { name: 'dora', kind: 'human' });
  const csrf = String(s.body.csrf);

  const me = await fetch(`${gw.url}/api/v1/console/session`, { headers: { cookie: s.cookie! } });
  assert.equal(me.status, 200);
  assert.equal(((await me.json()) as { csrf: string }).csrf, csrf);

  // A change with the cookie but without the CSRF token, with a wrong one, or from another origin: refused.
  const body = JSON.stringify({ connection: 'nope', seconds: 60, reason: 'x' });
  const h = { cookie: s.cookie!, 'content-type': 'application/json' };
  for (const headers of [{ ...h, origin: gw.url }, { ...h, origin: gw.url, 'x-gatehouse-csrf': 'x'.repeat(csrf.length) }, { ...h, origin: 'http://evil.example', 'x-gatehouse-csrf': csrf }]) {
    const r = await fetch(`${gw.url}/api/v1/access/requests`, { method: 'POST', headers, body });
    assert.equal(r.status, 403, JSON.stringify(headers));
  }
  const okReq = await fetch(`${gw.url}/api/v1/access/requests`, { method: 'POST', headers: { ...h, origin: gw.url, 'x-gatehouse-csrf': csrf }, body });
  assert.equal(okReq.status, 404, 'past the CSRF check: the connection does not exist');

  // Sign-out revokes the cookie's token: the cookie no longer works.
  const out = await fetch(`${gw.url}/api/v1/console/sign-out`, { method: 'POST', headers: { cookie: s.cookie!, origin: gw.url, 'x-gatehouse-csrf': csrf, 'content-type': 'application/json' }, body: '{}' });
  assert.equal(out.status, 200);
  assert.match(out.headers.get('set-cookie')!, /Max-Age=0/);
  assert.equal((await fetch(`${gw.url}/api/v1/console/session`, { headers: { cookie: s.cookie! } })).status, 401);
  // The token signed in with still works (sign-out ends the browser session only).
  assert.equal((await fetch(`${gw.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${dora}` } })).status, 200);

  const audit = JSON.parse(await gw.cliOk(['audit', '--json'])) as Array<{ action: string; data: Record<string, unknown> }>;
  const signIns = audit.filter((e) => e.action === 'console.sign-in');
  assert.equal((signIns.at(-1)!.data.actor as { name: string }).name, 'dora');
  assert.ok(audit.some((e) => e.action === 'console.sign-out'));
  assert.ok(!JSON.stringify(audit).includes(dora), 'the token is nowhere in the audit log');
  assert.ok(!JSON.stringify(audit).includes(s.cookie!.split('=')[1]!), 'nor the cookie');
});

test('wrong, revoked and expired tokens are refused alike, and no cookie is set', async () => {
  const bad = await signIn('ght_not-a-token');
  assert.equal(bad.status, 401);
  assert.equal(bad.setCookie, null);
  assert.equal(bad.body.error, 'invalid token');
  const short = (await gw.cliOk(['token', 'issue', 'dora', '--ttl', '1s'])).trim().split('\n').pop()!;
  await new Promise((r) => setTimeout(r, 1500));
  const expired = await signIn(short);
  assert.equal(expired.status, 401);
  assert.equal(expired.body.error, 'invalid token');
  const malformed = await fetch(`${gw.url}/api/v1/console/sign-in`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"tok": "x"}' });
  assert.equal(malformed.status, 400);
});

test('the console is served with strict headers; the API is published as OpenAPI', async () => {
  const page = await fetch(`${gw.url}/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<div id="root">/);
  assert.match(page.headers.get('content-security-policy')!, /default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; .*frame-ancestors 'none'/);
  assert.equal(page.headers.get('x-frame-options'), 'DENY');
  const spec = (await (await fetch(`${gw.url}/api/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> };
  assert.match(spec.openapi, /^3\./);
  for (const p of ['/api/v1/sessions', '/api/v1/sessions/{id}', '/api/v1/approvals', '/api/v1/approvals/{id}/approve', '/api/v1/console/sign-in', '/api/v1/policy']) {
    assert.ok(spec.paths[p], `${p} is described`);
  }
  assert.ok(!Object.keys(spec.paths).some((p) => p.startsWith('/git/')), 'Git smart HTTP is not part of the API description');
});
