// Nothing secret in a PostgreSQL store either, and the other places PostgreSQL returns values: a
// gateway recording into a PostgreSQL store, psql through it producing secrets on the server side
// (built by concatenation, so the statement text never holds them whole) in COPY … TO STDOUT data,
// an ErrorResponse DETAIL (Key (k)=(…) already exists), a NoticeResponse and a NOTIFY payload;
// and an ALTER ROLE … PASSWORD held for approval (the stored request is masked; approved, it runs).
// The events note each mask; a dump of the store database holds none of the secrets; the store
// verifies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, PG_BIN, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, GATEHOUSE_BIN, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import { eventsOf, recordOne, type Recording } from '../support/recordings.ts';

let cluster: PgCluster;
let gw: TestGateway;
let token: string;
let storeUrl: string;
let doraToken: string;
const HELD_PASSWORD = `held-pw-${randomBytes(8).toString('hex')}`;

const alnum = (n: number) => [...randomBytes(n)].map((b) => 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'[b % 62]).join('');
const digits = (n: number) => [...randomBytes(n)].map((b) => String(b % 10)).join('');
const upper = (n: number) => [...randomBytes(n)].map((b) => 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'[b % 32]).join('');

// [prefix, rest]: the statement holds them apart ('prefix' || 'rest'); only the server's answer holds them whole.
const COPY_KEY = ['AKIA', upper(16)] as const;
const ERROR_TOKEN = ['ghp_', alnum(36)] as const;
const NOTICE_TOKEN = ['glpat-', alnum(20)] as const;
const NOTIFY_TOKEN = ['xoxb-', `${digits(12)}-${digits(13)}-${alnum(24)}`] as const;
const SECRETS_IN_DUMP: string[] = [];
const whole = (p: readonly [string, string]) => p[0] + p[1];
const cat = (p: readonly [string, string]) => `'${p[0]}' || '${p[1]}'`;

function ok(r: RunResult): RunResult {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

before(async () => {
  cluster = await startPgCluster();
  await cluster.sql('CREATE DATABASE maskstore');
  storeUrl = `postgres://postgres@${cluster.host}:${cluster.port}/maskstore`;
  gw = await startTestGateway({ args: ['--store', storeUrl] });
  token = await gw.setupPostgres({ identity: 'agent2', connection: 'app', cluster });
  await cluster.sql('CREATE ROLE held_target LOGIN; ALTER ROLE scram_user CREATEROLE;');
  await gw.cliOk(['identity', 'add', 'dora', '--kind', 'human']);
  await gw.cliOk(['grant', 'dora', 'app', '--action', 'approve']);
  doraToken = (await gw.cliOk(['token', 'issue', 'dora', '--ttl', '1h'])).trim().split('\n').pop()!;
  const file = path.join(tmpdir(), `gatehouse-mask-policy-${process.pid}.yaml`);
  writeFileSync(file, 'rules:\n  - name: hold-role-changes\n    sql: { commands: ["ALTER ROLE"] }\n    action: hold\n');
  await gw.cliOk(['policy', 'apply', file]);
  rmSync(file);
});

after(async () => {
  await gw?.stop();
  await cluster?.stop();
});

test('COPY data, error DETAIL, notices and notifications are masked in a PostgreSQL store', async () => {
  const script = [
    `COPY (SELECT ${cat(COPY_KEY)} AS k, 1 AS n) TO STDOUT;`,
    'CREATE TEMP TABLE u (k text PRIMARY KEY);',
    `INSERT INTO u SELECT ${cat(ERROR_TOKEN)};`,
    `INSERT INTO u SELECT ${cat(ERROR_TOKEN)};`,
    `DO $$ BEGIN RAISE NOTICE 'found %', ${cat(NOTICE_TOKEN)}; END $$;`,
    'LISTEN chan;',
    `SELECT pg_notify('chan', 'token ' || ${cat(NOTIFY_TOKEN)});`,
    'SELECT 1;',
  ].join('\n');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  const { rec, result } = await recordOne(gw, async () => ok(await run('psql', [gw.dsn('app', 'agent2'), '-X', '-w', '-f', '-'], {
    env: { ...env, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' }, input: script, timeoutMs: 30_000,
  })));
  // The client sees everything as the server sent it.
  assert.ok(result.stdout.includes(whole(COPY_KEY)), result.stdout);
  assert.ok(result.stderr.includes(`Key (k)=(${whole(ERROR_TOKEN)}) already exists`), result.stderr);
  assert.ok(result.stderr.includes(`found ${whole(NOTICE_TOKEN)}`), result.stderr);
  assert.ok(result.stdout.includes(whole(NOTIFY_TOKEN)) || result.stderr.includes(whole(NOTIFY_TOKEN)), 'psql shows the notification');

  const recorded = JSON.stringify(rec.events);
  for (const p of [COPY_KEY, ERROR_TOKEN, NOTICE_TOKEN, NOTIFY_TOKEN]) assert.ok(!recorded.includes(whole(p)), `${p[0]}… is not in the recording`);
  const detectors = (r: Recording, type: string) => eventsOf(r, type).flatMap((e) => ((e.data.masked as Array<{ detector: string; field: string }> | undefined) ?? []).map((m) => `${m.field}:${m.detector}`));
  assert.ok(detectors(rec, 'result').includes('sample[*][0]:aws'), `COPY sample: ${JSON.stringify(detectors(rec, 'result'))}`);
  const errors = [...detectors(rec, 'error'), ...detectors(rec, 'result')];
  assert.ok(errors.some((d) => d.endsWith(':github') && d.includes('detail')), `error detail: ${JSON.stringify(errors)}`);
  assert.ok(detectors(rec, 'notice').some((d) => d.endsWith(':gitlab')), `notice: ${JSON.stringify(detectors(rec, 'notice'))}`);
  assert.ok(detectors(rec, 'notification').some((d) => d.endsWith(':slack')), `notification: ${JSON.stringify(detectors(rec, 'notification'))}`);

  // A statement held for approval: the request approvers see (and the store keeps) is masked too.
  const held = run('psql', [gw.dsn('app', 'agent2'), '-X', '-w', '-v', 'ON_ERROR_STOP=1', '-c', `ALTER ROLE held_target PASSWORD '${HELD_PASSWORD}'`], {
    env: { ...env, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' }, timeoutMs: 30_000,
  });
  let pending: { id: string; action: { text: string; masked?: unknown } } | undefined;
  for (let i = 0; i < 100 && !pending; i++) {
    const list = JSON.parse(await gw.cliOk(['approvals', 'list', '--json'], { token: doraToken })) as Array<{ id: string; action: { text: string; masked?: unknown } }>;
    pending = list.find((p) => p.action.text.startsWith('ALTER ROLE held_target'));
    if (!pending) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(pending, 'the ALTER ROLE is held');
  assert.equal(pending.action.text, "ALTER ROLE held_target PASSWORD '[masked:sql_password]'");
  assert.deepEqual(pending.action.masked, [{ field: 'text', detector: 'sql_password', count: 1 }]);
  await gw.cliOk(['approvals', 'approve', pending.id], { token: doraToken });
  ok(await held);
  assert.equal((await cluster.sql("select rolpassword is not null from pg_authid where rolname = 'held_target'")).trim(), 't', 'the approved statement ran as typed');
  SECRETS_IN_DUMP.push(HELD_PASSWORD);

  // The store database holds none of them, in any table.
  const dump = await run(`${PG_BIN}/pg_dump`, ['-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '-d', 'maskstore', '--data-only'], { timeoutMs: 60_000 });
  assert.equal(dump.code, 0, dump.stderr);
  assert.ok(dump.stdout.includes(rec.session.id), 'the dump holds the session');
  for (const secret of [...[COPY_KEY, ERROR_TOKEN, NOTICE_TOKEN, NOTIFY_TOKEN].map(whole), ...SECRETS_IN_DUMP]) {
    assert.ok(!dump.stdout.includes(secret), `${secret.slice(0, 6)}… is not in the PostgreSQL store`);
    assert.ok(!dump.stdout.includes(Buffer.from(secret).toString('hex')), `${secret.slice(0, 6)}… is not in it as hex`);
  }
  const verify = await run(process.execPath, [GATEHOUSE_BIN, 'verify', '--store', '--data-dir', gw.dataDir, '--store-url', storeUrl], { timeoutMs: 60_000 });
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});
