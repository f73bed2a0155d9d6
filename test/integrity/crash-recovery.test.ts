// Crash safety and key rotation with a real gateway: a session open when the gateway is
// SIGKILLed is sealed as interrupted at the next start (and verifies); rotating the signing key
// keeps older recordings verifiable while new ones are signed by the new key.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, GATEHOUSE_BIN, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import { keyIdOf } from '../../src/integrity/signing-keys.ts';

interface SessionView { id: string; endedAt: string | null; endReason: string | null; eventCount: number; identity: { name: string } }
interface SessionDetail { session: SessionView; events: Array<{ seq: number; type: string; data: Record<string, unknown> }> }

let pg: PgCluster;
let gw: TestGateway | undefined;
let work: string;
let dataDir: string;
let config: string;
let token: string;
let copies = 0;
const psqls = new Set<ChildProcess>();

const start = async (): Promise<TestGateway> => {
  gw = await startTestGateway({ dataDir, args: ['--config', config] });
  return gw;
};

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-crash-'));
  dataDir = path.join(work, 'data');
  config = path.join(work, 'gatehouse.yaml');
  writeFileSync(config, 'recording:\n  checkpoint_interval_ms: 200\n');
  pg = await startPgCluster();
  const g = await start();
  token = await g.setupPostgres({ identity: 'night-agent', connection: 'app', cluster: pg });
});

after(async () => {
  for (const p of psqls) p.kill('SIGKILL');
  await gw?.stop();
  await pg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

// ---- helpers ---------------------------------------------------------------------------------

/** A psql that reads statements from a stdin the test keeps open: the session stays open. */
function openPsql(g: TestGateway): { send(sql: string): void; close(): void } {
  const child = spawn('psql', [g.dsn('app', 'night-agent'), '-X', '-q', '-f', '-'], {
    env: { ...process.env, PGPASSWORD: token }, stdio: ['pipe', 'ignore', 'ignore'],
  });
  psqls.add(child);
  child.once('exit', () => psqls.delete(child));
  child.stdin!.on('error', () => {});
  return {
    send: (sql) => { child.stdin!.write(sql + '\n'); },
    close: () => { child.stdin!.end(); child.kill('SIGKILL'); },
  };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function sessions(g: TestGateway): Promise<SessionView[]> {
  return JSON.parse(await g.cliOk(['sessions', 'list', '--json'])) as SessionView[];
}

async function show(g: TestGateway, id: string): Promise<SessionDetail> {
  return JSON.parse(await g.cliOk(['sessions', 'show', id, '--json'])) as SessionDetail;
}

/** Waits until the open session's recording holds an event matching `pred`; returns the session id. */
async function waitForEvent(g: TestGateway, known: Set<string>, pred: (e: SessionDetail['events'][number]) => boolean): Promise<string> {
  return waitFor('the statement to be recorded', async () => {
    for (const s of await sessions(g)) {
      if (known.has(s.id) || s.endedAt !== null) continue;
      if ((await show(g, s.id)).events.some(pred)) return s.id;
    }
    return undefined;
  });
}

function gatehouse(args: string[]): Promise<RunResult> {
  return run(process.execPath, [GATEHOUSE_BIN, ...args], { timeoutMs: 30_000 });
}

function copyDataDir(): string {
  const dir = path.join(work, `copy-${++copies}`);
  cpSync(dataDir, dir, { recursive: true });
  return dir;
}

function signingKeyFiles(): string[] {
  return readdirSync(path.join(dataDir, 'signing')).filter((f) => /^key-\d+\.pem$/.test(f)).sort().map((f) => path.join(dataDir, 'signing', f));
}

const keyIdOfFile = (file: string): string => keyIdOf(createPublicKey(createPrivateKey(readFileSync(file, 'utf8'))));

async function exportAndVerify(g: TestGateway, id: string, extra: string[] = []): Promise<{ dir: string; verify: RunResult }> {
  const dir = path.join(work, `bundle-${++copies}`);
  const out = await g.cliOk(['sessions', 'export', id, '--out', dir]);
  assert.doesNotMatch(out, /NOT sealed/);
  assert.match(out, /sealed/);
  return { dir, verify: await gatehouse(['verify', dir, ...extra]) };
}

// ---- the tests -------------------------------------------------------------------------------

let interruptedId: string;

test('a session open when the gateway is SIGKILLed is sealed as interrupted at the next start, and verifies', async () => {
  const g = gw!;
  const before = new Set((await sessions(g)).map((s) => s.id));
  const psql = openPsql(g);
  psql.send('select 41 + 1 as answer;');
  const id = await waitForEvent(g, before, (e) => e.type === 'result' && e.data.tag === 'SELECT 1');
  // A statement that has reached PostgreSQL and is still running when the gateway dies.
  psql.send('select pg_sleep(30);');
  await waitFor('pg_sleep to run on the target', async () =>
    (await pg.sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(30);' and state = 'active'")) === '1' ? true : undefined);
  const killedAt = Date.now();
  await g.kill();
  psql.close();

  // Before the restart the session is open in the store: verify --store does not count it as sealed.
  const stopped = copyDataDir();
  const pre = await gatehouse(['verify', '--store', '--data-dir', stopped]);
  assert.equal(pre.code, 0, pre.stdout + pre.stderr);
  assert.match(pre.stdout, /\(0 sealed and intact, 1 open\), 0 seals in the log: all intact/);

  const g2 = await start();
  const s = await waitFor('the interrupted session to be sealed', async () => {
    const row = (await sessions(g2)).find((x) => x.id === id);
    return row?.endedAt ? row : undefined;
  });
  assert.match(s.endReason ?? '', /^interrupted/);
  // It ended when it was last heard of, not when the next gateway found it.
  assert.ok(Date.parse(s.endedAt!) <= killedAt, `endedAt ${s.endedAt} is not after the crash (${new Date(killedAt).toISOString()})`);
  const detail = await show(g2, id);
  assert.equal(detail.session.endReason, s.endReason);
  const types = detail.events.map((e) => e.type);
  assert.equal(types[0], 'session.start');
  assert.equal(types[types.length - 1], 'session.end');
  assert.match(String(detail.events[detail.events.length - 1].data.reason), /^interrupted/);
  assert.deepEqual(detail.events.map((e) => e.seq), detail.events.map((_, i) => i));
  // Nothing that reached the target is missing: both statements are in the record, in order.
  const queries = detail.events.filter((e) => e.type === 'query').map((e) => e.data.text);
  assert.deepEqual(queries, ['select 41 + 1 as answer;', 'select pg_sleep(30);']);
  assert.equal(detail.session.eventCount, detail.events.length);
  // The statement in flight when the gateway died has an outcome saying so (as a disconnect does).
  const sleep = detail.events.find((e) => e.type === 'query' && e.data.text === 'select pg_sleep(30);')!;
  const outcome = detail.events.find((e) => e.type === 'result' && e.data.ref === sleep.seq);
  assert.match(String(outcome?.data.incomplete), /^interrupted/, JSON.stringify(outcome));
  const answered = detail.events.find((e) => e.type === 'query' && e.data.text === 'select 41 + 1 as answer;')!;
  assert.equal(detail.events.filter((e) => e.type === 'result' && e.data.ref === answered.seq).length, 1, 'an answered statement gets no second outcome');

  // Sealed: the export carries a seal and the bundle verifies offline.
  const { verify } = await exportAndVerify(g2, id);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  assert.match(verify.stdout, /^OK {2}session /m);
  assert.match(verify.stdout, /ended: interrupted/);
  // And the whole store verifies.
  const r = await gatehouse(['verify', '--store', '--data-dir', dataDir]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /\(1 sealed and intact, 0 open\), 1 seals in the log: all intact/);
  interruptedId = id;
});

test('verify --store checks the chain of a session left open by a crash', async () => {
  // Regression test for a verifier gap found in review (now fixed).
  const g = gw!;
  const before = new Set((await sessions(g)).map((s) => s.id));
  const psql = openPsql(g);
  psql.send("select 'keep me' as evidence;");
  const id = await waitForEvent(g, before, (e) => e.type === 'result');
  await g.kill();
  psql.close();
  const dir = copyDataDir();
  const db = new DatabaseSync(path.join(dir, 'gatehouse.db'));
  try {
    const r = db.prepare("UPDATE events SET data = replace(data, 'keep me', 'nothing') WHERE session_id = ? AND type = 'query'").run(id);
    assert.equal(r.changes, 1);
  } finally {
    db.close();
  }
  await start();
  const res = await gatehouse(['verify', '--store', '--data-dir', dir]);
  assert.equal(res.code, 1, `an edited event must not pass:\n${res.stdout}${res.stderr}`);
  assert.match(res.stdout, new RegExp(`^BROKEN  session ${id}: event \\d+ \\(query\\) does not match its recorded hash`, 'm'));
});

test('key rotation: old recordings stay verifiable, new sessions are signed by the new key, keys list shows both', async () => {
  assert.ok(interruptedId, 'runs after the crash test');
  let g = gw!;
  const [oldKeyFile] = signingKeyFiles();
  const oldKeyId = keyIdOfFile(oldKeyFile);
  const old = await exportAndVerify(g, interruptedId);
  assert.equal(old.verify.code, 0, old.verify.stdout);
  assert.match(old.verify.stdout, new RegExp(`signed by key ${oldKeyId}`));

  // Rotate while the gateway is stopped, then restart.
  await g.stop();
  const rot = await gatehouse(['keys', 'rotate', '--data-dir', dataDir]);
  assert.equal(rot.code, 0, rot.stderr);
  const files = signingKeyFiles();
  assert.equal(files.length, 2);
  const newKeyFile = files[1];
  const newKeyId = keyIdOfFile(newKeyFile);
  assert.notEqual(newKeyId, oldKeyId);
  assert.match(rot.stdout, new RegExp(`new signing key ${newKeyId}`));
  g = await start();

  const list = await gatehouse(['keys', 'list', '--data-dir', dataDir]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, new RegExp(`^${oldKeyId} {2}added `, 'm'));
  assert.match(list.stdout, new RegExp(`^${newKeyId} {2}added `, 'm'));
  assert.equal((list.stdout.match(/BEGIN PUBLIC KEY/g) ?? []).length, 2);

  // A new session is signed by the new key only.
  const r = await run('psql', [g.dsn('app', 'night-agent'), '-XAtc', "select 'after rotation'"], { env: { ...process.env, PGPASSWORD: token }, timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  const fresh = await waitFor('the new session to end', async () => {
    const s = (await sessions(g)).find((x) => x.endedAt !== null && x.id !== interruptedId && x.endReason === 'client terminated');
    return s;
  });
  const neu = await exportAndVerify(g, fresh.id);
  assert.equal(neu.verify.code, 0, neu.verify.stdout);
  assert.match(neu.verify.stdout, new RegExp(`signed by key ${newKeyId}`));
  assert.doesNotMatch(neu.verify.stdout, new RegExp(oldKeyId));
  assert.deepEqual(readdirSync(path.join(neu.dir, 'keys')), [`${newKeyId}.pem`]);
  const pinnedNew = await gatehouse(['verify', neu.dir, '--trusted-key', newKeyFile]);
  assert.equal(pinnedNew.code, 0, pinnedNew.stdout);
  const pinnedOld = await gatehouse(['verify', neu.dir, '--trusted-key', oldKeyFile]);
  assert.equal(pinnedOld.code, 1, pinnedOld.stdout);
  assert.match(pinnedOld.stdout, new RegExp(`^BROKEN  .*signed by key ${newKeyId}, which is not a trusted key$`, 'm'));

  // The old bundle still verifies, pinned to the old key; and so does a fresh export of the old
  // session from the rotated gateway (the store keeps every public key).
  const oldAgain = await gatehouse(['verify', old.dir, '--trusted-key', oldKeyFile]);
  assert.equal(oldAgain.code, 0, oldAgain.stdout);
  const reexport = await exportAndVerify(g, interruptedId, ['--trusted-key', oldKeyFile, newKeyFile]);
  assert.equal(reexport.verify.code, 0, reexport.verify.stdout);

  // The whole store: both keys are anchors (both private key files are in <data-dir>/signing).
  const store = await gatehouse(['verify', '--store', '--data-dir', dataDir]);
  assert.equal(store.code, 0, store.stdout);
  assert.match(store.stdout, /all intact/);
});

test('a session interrupted under the old key and sealed after a rotation verifies with both keys', async () => {
  const g = gw!;
  const before = new Set((await sessions(g)).map((s) => s.id));
  const keyAtCrash = keyIdOfFile(signingKeyFiles().at(-1)!);
  const psql = openPsql(g);
  psql.send("select 'one';");
  const id = await waitForEvent(g, before, (e) => e.type === 'result');
  // Hold the session open until a checkpoint signed by the current key covers it.
  await waitFor('a checkpoint', async () => {
    const db = new DatabaseSync(path.join(dataDir, 'gatehouse.db'), { readOnly: true });
    try {
      const n = (db.prepare('SELECT count(*) AS n FROM checkpoints WHERE session_id = ?').get(id) as { n: number }).n;
      return Number(n) > 0 ? true : undefined;
    } finally {
      db.close();
    }
  });
  await g.kill();
  psql.close();
  const rot = await gatehouse(['keys', 'rotate', '--data-dir', dataDir]);
  assert.equal(rot.code, 0, rot.stderr);
  const sealKey = keyIdOfFile(signingKeyFiles().at(-1)!);
  assert.notEqual(sealKey, keyAtCrash);
  const g2 = await start();
  const s = await waitFor('the interrupted session to be sealed', async () => (await sessions(g2)).find((x) => x.id === id && x.endedAt !== null));
  assert.match(s.endReason ?? '', /^interrupted/);

  const { dir, verify } = await exportAndVerify(g2, id);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  const seal = JSON.parse(readFileSync(path.join(dir, 'seal.json'), 'utf8')) as { keyId: string };
  assert.equal(seal.keyId, sealKey, 'the seal is signed by the key current at the restart');
  const cps = readFileSync(path.join(dir, 'checkpoints.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { keyId: string });
  assert.ok(cps.some((c) => c.keyId === keyAtCrash), 'the checkpoint is signed by the key current at the crash');
  assert.deepEqual(readdirSync(path.join(dir, 'keys')).sort(), [`${keyAtCrash}.pem`, `${sealKey}.pem`].sort());
  assert.match(verify.stdout, new RegExp(`signed by key .*${keyAtCrash}`));
  assert.match(verify.stdout, new RegExp(`signed by key .*${sealKey}`));

  const store = await gatehouse(['verify', '--store', '--data-dir', dataDir]);
  assert.equal(store.code, 0, store.stdout);
  assert.match(store.stdout, /, 0 open\), \d+ seals in the log: all intact/);
});
