// Enrollment of a connector process with a token from `gatehouse connector add`: it works once;
// a used, expired or forged token, or one issued for another connector name, is refused with a
// clear message and a non-zero exit, and nothing is written to the connector's data directory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import {
  addConnector, listConnectors, startConnector, tempDataDir, waitForConnectorStatus, type ConnectorProcess,
} from '../support/connector.ts';
import { createKeyAndCsr } from '../../src/connector/ca.ts';

let gw: TestGateway;
const running: ConnectorProcess[] = [];

before(async () => {
  gw = await startTestGateway();
});

after(async () => {
  for (const c of running) await c.kill('SIGKILL');
  await gw?.stop();
});

/** Runs `gatehouse connector …` for enrollment and expects it to be refused. */
async function expectRefused(name: string, token: string, why: string): Promise<{ stderr: string }> {
  const dataDir = tempDataDir();
  const c = await startConnector({ gateway: gw.url, name, dataDir, allow: ['127.0.0.1:5432'], token, waitConnected: false });
  running.push(c);
  const timer = setTimeout(() => { void c.kill('SIGKILL'); }, 15_000);
  const exit = await c.exited;
  clearTimeout(timer);
  assert.equal(exit.signal, null, `${why}: the connector exits by itself (not killed after 15 s); stderr: ${c.logs()}`);
  assert.notEqual(exit.code, 0, `${why}: non-zero exit; stdout: ${c.stdout()} stderr: ${c.logs()}`);
  assert.match(c.logs(), /enrollment refused/, `${why}: a clear message; stderr: ${c.logs()}`);
  assert.doesNotMatch(c.stdout(), /is connected/);
  const written = existsSync(dataDir) ? readdirSync(dataDir) : [];
  assert.deepEqual(written, [], `${why}: nothing written to the data directory`);
  return { stderr: c.logs() };
}

async function enrollApi(name: string, token: string, csr?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const csrPem = csr ?? (await createKeyAndCsr(name)).csrPem;
  const res = await fetch(`${gw.url}/api/v1/connectors/enroll`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, token, csr: csrPem }),
  });
  return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, unknown> };
}

test('a valid token enrolls the connector once: credential kept (0600) in its data directory, connected', async () => {
  const token = await addConnector(gw, 'good');
  assert.match(token, /^\S{20,}$/, 'the last stdout line is the token');
  assert.equal((await listConnectors(gw)).find((c) => c.name === 'good')?.status, 'awaiting enrollment');
  const c = await startConnector({ gateway: gw.url, name: 'good', dataDir: tempDataDir(), allow: ['127.0.0.1:5432'], token });
  running.push(c);
  const file = path.join(c.dataDir, 'connector.json');
  assert.ok(existsSync(file));
  assert.equal(statSync(file).mode & 0o777, 0o600, 'the credential is private');
  const cred = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  assert.equal(cred.name, 'good');
  assert.ok(!JSON.stringify(cred).includes(token), 'the enrollment token is not kept');
  await waitForConnectorStatus(gw, 'good', 'connected');
});

test('a used token is refused the second time (another data dir, same name), also through the API', async () => {
  const token = await addConnector(gw, 'once');
  const first = await startConnector({ gateway: gw.url, name: 'once', dataDir: tempDataDir(), allow: ['127.0.0.1:5432'], token });
  running.push(first);
  await waitForConnectorStatus(gw, 'once', 'connected');
  await expectRefused('once', token, 'used token');
  const api = await enrollApi('once', token);
  assert.equal(api.status, 401);
  assert.match(String(api.body.error ?? api.body.message), /enrollment refused/);
  // The first connector is unaffected.
  assert.equal(first.running, true);
  assert.equal((await listConnectors(gw)).find((c) => c.name === 'once')?.status, 'connected');
});

test('a token used twice at the same time enrolls exactly one connector', async () => {
  const token = await addConnector(gw, 'race');
  // CSRs first, so that the requests really arrive together.
  const csrs = await Promise.all(Array.from({ length: 6 }, async () => (await createKeyAndCsr('race')).csrPem));
  const answers = await Promise.all(csrs.map((csr) => enrollApi('race', token, csr)));
  const statuses = answers.map((a) => a.status).sort();
  assert.deepEqual(statuses, [200, 401, 401, 401, 401, 401], `single use under concurrency: ${JSON.stringify(statuses)}`);
});

test('an expired token is refused (enrollment_expires_at moved to the past in the store)', async () => {
  const token = await addConnector(gw, 'late');
  const db = new DatabaseSync(path.join(gw.dataDir, 'gatehouse.db'));
  try {
    db.exec('PRAGMA busy_timeout = 5000');
    const row = db.prepare('SELECT enrollment_expires_at AS e FROM connectors WHERE name = ?').get('late') as { e: number };
    assert.ok(row.e > Date.now() + 14 * 60_000 && row.e <= Date.now() + 15 * 60_000, `15-minute TTL in ms: ${row.e}`);
    db.prepare('UPDATE connectors SET enrollment_expires_at = ? WHERE name = ?').run(Date.now() - 1000, 'late');
  } finally {
    db.close();
  }
  await expectRefused('late', token, 'expired token');
  const api = await enrollApi('late', token);
  assert.equal(api.status, 401);
  assert.equal((await listConnectors(gw)).find((c) => c.name === 'late')?.status, 'awaiting enrollment');
});

test('a forged token is refused (known and unknown names alike); the real token still works afterwards', async () => {
  const real = await addConnector(gw, 'target');
  const forged = 'ght_' + randomBytes(32).toString('base64url');
  await expectRefused('target', forged, 'forged token');
  const known = await enrollApi('target', forged);
  const unknown = await enrollApi('nobody', forged);
  assert.equal(known.status, 401);
  assert.equal(unknown.status, 401);
  assert.equal(known.body.error ?? known.body.message, unknown.body.error ?? unknown.body.message, 'no hint whether the name exists');
  assert.match(String(known.body.error ?? known.body.message), /enrollment refused/);
  // Not even a well-formed request: a truncated token, an empty one.
  assert.equal((await enrollApi('target', real.slice(0, -1))).status, 401);
  assert.equal((await enrollApi('target', '')).status, 401);

  const c = await startConnector({ gateway: gw.url, name: 'target', dataDir: tempDataDir(), allow: ['127.0.0.1:5432'], token: real });
  running.push(c);
  await waitForConnectorStatus(gw, 'target', 'connected');
});

test('a token issued for another connector name is refused; it still enrolls its own connector', async () => {
  const alphaToken = await addConnector(gw, 'alpha');
  await addConnector(gw, 'beta');
  await expectRefused('beta', alphaToken, 'token of another connector');
  await expectRefused('gamma', alphaToken, 'token for a name that does not exist');
  const listed = await listConnectors(gw);
  assert.equal(listed.find((c) => c.name === 'beta')?.status, 'awaiting enrollment');
  assert.equal(listed.find((c) => c.name === 'gamma'), undefined);

  const alpha = await startConnector({ gateway: gw.url, name: 'alpha', dataDir: tempDataDir(), allow: ['127.0.0.1:5432'], token: alphaToken });
  running.push(alpha);
  await waitForConnectorStatus(gw, 'alpha', 'connected');
});

test('a new token from `connector add` (before enrollment) replaces the old one, which is refused', async () => {
  const old = await addConnector(gw, 'reissued');
  const fresh = await addConnector(gw, 'reissued');
  assert.notEqual(old, fresh);
  await expectRefused('reissued', old, 'superseded token');
  const c = await startConnector({ gateway: gw.url, name: 'reissued', dataDir: tempDataDir(), allow: ['127.0.0.1:5432'], token: fresh });
  running.push(c);
  await waitForConnectorStatus(gw, 'reissued', 'connected');
  // Once enrolled, `connector add` for the same name is refused instead of silently re-issuing.
  const again = await gw.cli(['connector', 'add', 'reissued']);
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /already enrolled/);
});

test('without a token and without a credential the connector refuses to start, clearly', async () => {
  const dataDir = tempDataDir();
  const c = await startConnector({ gateway: gw.url, name: 'bare', dataDir, allow: ['127.0.0.1:5432'], waitConnected: false });
  running.push(c);
  const exit = await c.exited;
  assert.notEqual(exit.code, 0);
  assert.match(c.logs(), /not enrolled yet: pass --token/);
  assert.equal(existsSync(dataDir) ? readdirSync(dataDir).length : 0, 0);
});
