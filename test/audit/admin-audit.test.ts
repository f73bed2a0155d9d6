// The admin audit log against a real gateway: every change through the API is recorded before it
// is made (who, from where, which route and parameters, the outcome), no secret reaches it, a
// refused attempt is on record too, tokens issued without a bearer token are recorded, the log is
// verified with the recordings and tampering shows, and a change that cannot be recorded is not made.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import path from 'node:path';
import { mountSmallDisk, type SmallDisk } from '../support/small-disk.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let gw: TestGateway;
let disk: SmallDisk;
const PASSWORD = 'target-password-' + 'x'.repeat(12);

interface Entry { at: string; gateway: string; seq: number; action: string; data: { actor?: { name: string; from: string }; method?: string; route?: string; params?: Record<string, string>; body?: Record<string, unknown>; ref?: number; status?: number } }

before(async () => {
  disk = mountSmallDisk('gatehouse-audit-');
  // A writer whose every commit needs free space (see test/integrity/store-unavailable.test.ts).
  gw = await startTestGateway({ dataDir: disk.dataDir, env: { GATEHOUSE_RECORD_WRITER: 'inline' } });
});

after(async () => {
  await gw?.stop();
  disk?.unmount();
});

const audit = async (): Promise<Entry[]> => JSON.parse(await gw.cliOk(['audit', '--json'])) as Entry[];

test('changes are recorded before they are made, with actor, route, parameters and outcome; secrets never', async () => {
  await gw.cliOk(['identity', 'add', 'bot', '--kind', 'agent']);
  const issued = (await gw.cliOk(['token', 'issue', 'bot', '--ttl', '1h'])).trim().split('\n').pop()!;
  await gw.cliOk(['connection', 'add', 'app', '--type', 'postgres', '--host', '127.0.0.1', '--port', '5432', '--database', 'app', '--user', 'app',
    '--sslmode', 'disable', '--password-env', 'PW'], { env: { PW: PASSWORD } });
  await gw.cliOk(['grant', 'bot', 'app']);
  await gw.cliOk(['token', 'revoke', issued]);
  const refused = await gw.cli(['identity', 'add', 'eve', '--kind', 'human'], { token: 'ght_not-a-valid-token' });
  assert.notEqual(refused.code, 0);

  const entries = await audit();
  const requests = entries.filter((e) => e.action === 'request');
  const routes = requests.map((e) => `${e.data.method} ${e.data.route}`);
  for (const r of ['POST /api/v1/identities', 'POST /api/v1/identities/:name/tokens', 'POST /api/v1/connections', 'POST /api/v1/grants']) {
    assert.ok(routes.includes(r), `${r} is on record: ${routes.join(', ')}`);
  }
  const add = requests.find((e) => e.data.route === '/api/v1/identities')!;
  assert.equal(add.data.actor?.name, 'admin');
  assert.equal(add.data.actor?.from, '127.0.0.1');
  assert.deepEqual(add.data.body, { name: 'bot', kind: 'agent' });
  const tokenIssue = requests.find((e) => e.data.route === '/api/v1/identities/:name/tokens')!;
  assert.deepEqual(tokenIssue.data.params, { name: 'bot' });
  const outcome = entries.find((e) => e.action === 'outcome' && e.data.ref === add.seq);
  assert.equal(outcome?.data.status, 201);
  const conn = requests.find((e) => e.data.route === '/api/v1/connections')!;
  assert.equal(conn.data.body?.password, '[redacted]');
  // An attempt with a bad token is refused before anyone is known: not a change, and not recorded as one by eve.
  assert.ok(!requests.some((e) => (e.data.body as { name?: string } | undefined)?.name === 'eve' && e.data.actor?.name !== 'anonymous'));

  // No secret anywhere: not in the audit output, not in the store's bytes.
  const all = JSON.stringify(entries);
  assert.ok(!all.includes(PASSWORD), 'the target password is not in the audit log');
  assert.ok(!all.includes(issued), 'the issued token is not in the audit log');
  const db = readFileSync(path.join(gw.dataDir, 'gatehouse.db'));
  assert.equal(db.indexOf(PASSWORD), -1, 'the password is in the store only encrypted');
  assert.equal(db.indexOf(issued.slice(4)), -1, 'the token is in the store only hashed');

  const shown = await gw.cliOk(['audit']);
  assert.match(shown, /admin\s+127\.0\.0\.1\s+POST \/api\/v1\/grants\s+201/);
});

test('a non-administrator cannot read it, and its refused change is on record with its outcome', async () => {
  await gw.cliOk(['identity', 'add', 'carol', '--kind', 'human']);
  const token = (await gw.cliOk(['token', 'issue', 'carol', '--ttl', '1h'])).trim().split('\n').pop()!;
  const read = await gw.cli(['audit'], { token });
  assert.match(read.stderr, /not an administrator/);
  const change = await gw.cli(['identity', 'add', 'mallory', '--kind', 'human'], { token });
  assert.notEqual(change.code, 0);
  const entries = await audit();
  const attempt = entries.find((e) => e.action === 'request' && e.data.actor?.name === 'carol' && e.data.route === '/api/v1/identities');
  assert.ok(attempt, 'the refused attempt is recorded');
  assert.equal(entries.find((e) => e.action === 'outcome' && e.data.ref === attempt.seq)?.data.status, 403);
});

test('a change that cannot be recorded is not made', async () => {
  disk.fill();
  try {
    const r = await gw.cli(['identity', 'add', 'unrecorded', '--kind', 'human']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /admin audit log cannot be written right now, so the change was not made/);
  } finally {
    disk.free();
  }
  await new Promise((r) => setTimeout(r, 1500)); // the kept batch is retried within a second
  const list = JSON.parse(await gw.cliOk(['identity', 'list', '--json'])) as Array<{ name: string }>;
  assert.equal(list.some((i) => i.name === 'unrecorded'), false);
});

test('verify --store checks the audit log: an edited entry, a removed one and a cut-off end are found', async () => {
  await gw.stop();
  const ok = await gw.cli(['verify', '--store', '--data-dir', gw.dataDir]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /^admin audit log: \d+ entries from 1 gateway$/m);
  const file = path.join(gw.dataDir, 'gatehouse.db');
  const original = readFileSync(file);
  const tampered = async (sql: string, expected: RegExp) => {
    writeFileSync(file, original);
    const db = new DatabaseSync(file);
    db.exec(sql);
    db.close();
    const bad = await gw.cli(['verify', '--store', '--data-dir', gw.dataDir]);
    assert.notEqual(bad.code, 0, sql);
    assert.match(bad.stdout, expected);
  };
  await tampered(`UPDATE audit_log SET data = replace(data, '"admin"', '"someone-else"') WHERE seq = 0`, /BROKEN {2}admin audit log of gateway gw_\S+: entry 0 \(request\) does not match its recorded hash/);
  await tampered('DELETE FROM audit_log WHERE seq = 3', /BROKEN {2}admin audit log of gateway \S+: entry 3 is missing/);
  await tampered('DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)', /BROKEN {2}the admin audit log of gateway \S+ ends before entry \d+, which the gateway wrote: entries were removed from its end/);
  writeFileSync(file, original);
});
