// The console's live streams (SSE) outlive the request that opened them, so they are checked
// again while they run: signing out (which revokes the browser's token) ends an open approvals
// stream with a `revoked` frame, and the stream cannot be opened again with that cookie.
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

test('signing out ends the approvals stream the console had open, within the 5 s recheck', async () => {
  const signIn = await fetch(`${gw.url}/api/v1/console/sign-in`, { method: 'POST', headers: { 'content-type': 'application/json', origin: gw.url }, body: JSON.stringify({ token: dora }) });
  assert.equal(signIn.status, 200);
  const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!;
  const { csrf } = (await signIn.json()) as { csrf: string };

  const res = await fetch(`${gw.url}/api/v1/approvals/events`, { headers: { cookie } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const reader = res.body!.getReader();
  let text = '';
  const next = async () => {
    const { value, done } = await reader.read();
    if (value) text += Buffer.from(value).toString();
    return done;
  };
  while (!text.includes('event: approvals')) assert.equal(await next(), false);

  const out = await fetch(`${gw.url}/api/v1/console/sign-out`, { method: 'POST', headers: { cookie, 'x-gatehouse-csrf': csrf, origin: gw.url, 'content-type': 'application/json' }, body: '{}' });
  assert.equal(out.status, 200);
  const t0 = Date.now();
  let ended = false;
  while (!ended && Date.now() - t0 < 12_000) ended = await next();
  assert.ok(ended, 'the stream ended');
  assert.match(text, /event: revoked\ndata: \{"error":"the token this view was opened with is no longer valid/);
  assert.ok(Date.now() - t0 < 6_500, `ended ${Date.now() - t0} ms after sign-out`);
  const again = await fetch(`${gw.url}/api/v1/approvals/events`, { headers: { cookie } });
  assert.equal(again.status, 401);
  await again.body?.cancel();
});

test('an open approvals stream does not keep the gateway from stopping', async () => {
  const res = await fetch(`${gw.url}/api/v1/approvals/events`, { headers: { authorization: `Bearer ${dora}` } });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  let text = '';
  while (!text.includes('event: approvals')) text += Buffer.from((await reader.read()).value ?? []).toString();
  const ended = (async () => { for (;;) { try { if ((await reader.read()).done) return 'ended'; } catch { return 'ended'; } } })();
  const t0 = Date.now();
  await gw.stop();
  const ms = Date.now() - t0;
  assert.equal(gw.process.signalCode, null, `the gateway exited by itself, not killed (${ms} ms)`);
  assert.ok(ms < 5000, `stopped in ${ms} ms`);
  assert.equal(await ended, 'ended');
});
