// Tampering with the gateway's store. A real gateway records a few psql sessions into its
// SQLite store; then every test copies the whole (stopped) data directory, tampers directly in
// SQLite as an operator with database access could, and runs `gatehouse verify --store`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, GATEHOUSE_BIN, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import { eventHash, GENESIS_HASH, sha256Hex } from '../../src/integrity/hash-chain.ts';
import { canonicalJson } from '../../src/integrity/canonical-json.ts';
import { SigningKey } from '../../src/integrity/signing-keys.ts';

let pg: PgCluster;
let gw: TestGateway;
let work: string;
let dataDir: string;
/** Session ids by seal-log position (1-based; index 0 unused). */
let byPosition: string[];
let gatewayKeyId: string;
let copies = 0;
const SESSIONS = 4;

type Row = Record<string, unknown>;

// ---- the recorded store --------------------------------------------------------------------

async function psql(token: string, script: string): Promise<void> {
  const r = await run('psql', [gw.dsn('app', 'auditee'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'],
    { env: { ...process.env, PGPASSWORD: token }, input: script, timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
}

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-store-verify-'));
  dataDir = path.join(work, 'data');
  const config = path.join(work, 'gatehouse.yaml');
  writeFileSync(config, 'recording:\n  checkpoint_interval_ms: 200\n');
  pg = await startPgCluster();
  gw = await startTestGateway({ dataDir, args: ['--config', config] });
  const token = await gw.setupPostgres({ identity: 'auditee', connection: 'app', cluster: pg });
  await psql(token, 'select 1;\nselect 2;\n');
  // The second session stays open long enough to get signed checkpoints.
  await psql(token, "select 'two';\nselect pg_sleep(0.5);\nselect 'after sleep';\n");
  await psql(token, "select 'three';\ncreate temp table t (x int);\ninsert into t values (1);\n");
  await psql(token, "select 'four';\n");
  // Wait until every session's end (and seal) is committed, then stop the gateway cleanly.
  for (let i = 0; i < 100; i++) {
    const rows = JSON.parse(await gw.cliOk(['sessions', 'list', '--json'])) as Array<{ endedAt: string | null }>;
    if (rows.length === SESSIONS && rows.every((s) => s.endedAt !== null)) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  await gw.stop();

  const db = new DatabaseSync(path.join(dataDir, 'gatehouse.db'), { readOnly: true });
  try {
    const seals = db.prepare('SELECT position, session_id FROM seals ORDER BY position').all() as Row[];
    assert.deepEqual(seals.map((s) => Number(s.position)), [1, 2, 3, 4]);
    byPosition = ['', ...seals.map((s) => String(s.session_id))];
    const keys = db.prepare('SELECT key_id FROM signing_keys').all() as Row[];
    assert.equal(keys.length, 1);
    gatewayKeyId = String(keys[0].key_id);
    const cps = db.prepare('SELECT count(*) AS n FROM checkpoints WHERE session_id = ?').get(byPosition[2]) as Row;
    assert.ok(Number(cps.n) >= 1, 'the session with pg_sleep should have a checkpoint');
  } finally {
    db.close();
  }
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

// ---- tampering and verifying ----------------------------------------------------------------

/** A fresh copy of the whole data directory, tampered with by `fn` directly in SQLite. */
function tamper(fn: (db: DatabaseSync) => void): string {
  const dir = path.join(work, `copy-${++copies}`);
  cpSync(dataDir, dir, { recursive: true });
  const db = new DatabaseSync(path.join(dir, 'gatehouse.db'));
  try {
    fn(db);
  } finally {
    db.close();
  }
  return dir;
}

function verifyStore(dir: string, extra: string[] = []): Promise<RunResult> {
  return run(process.execPath, [GATEHOUSE_BIN, 'verify', '--store', '--data-dir', dir, ...extra], { timeoutMs: 30_000 });
}

const brokenLines = (r: RunResult): string[] =>
  r.stdout.split('\n').filter((l) => l.startsWith('BROKEN  ')).map((l) => l.slice('BROKEN  '.length));

/** Exit 1; the first BROKEN line matches `first`; returns all problem lines. */
async function assertBroken(dir: string, first: RegExp, extra: string[] = []): Promise<string[]> {
  const r = await verifyStore(dir, extra);
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}:\n${r.stdout}${r.stderr}`);
  const lines = brokenLines(r);
  assert.ok(lines.length > 0, `expected BROKEN lines:\n${r.stdout}${r.stderr}`);
  assert.match(lines[0], first, r.stdout);
  assert.match(r.stdout, new RegExp(`: ${lines.length} problems?\\n`));
  assert.doesNotMatch(r.stdout, /all intact/);
  return lines;
}

async function assertIntact(dir: string, extra: string[] = []): Promise<RunResult> {
  const r = await verifyStore(dir, extra);
  assert.equal(r.code, 0, `expected the store to verify:\n${r.stdout}${r.stderr}`);
  assert.deepEqual(brokenLines(r), []);
  assert.match(r.stdout, /all intact/);
  return r;
}

function events(db: DatabaseSync, sessionId: string): Row[] {
  return db.prepare('SELECT * FROM events WHERE session_id = ? ORDER BY seq').all(sessionId) as Row[];
}

/** Rewrites the hash of every event of the session from its (possibly edited) content. */
function rechain(db: DatabaseSync, sessionId: string): string {
  let prev = GENESIS_HASH;
  const upd = db.prepare('UPDATE events SET hash = ? WHERE session_id = ? AND seq = ?');
  for (const e of events(db, sessionId)) {
    prev = eventHash({ sessionId, seq: Number(e.seq), ts: Number(e.ts), type: String(e.type), data: String(e.data) }, prev);
    upd.run(prev, sessionId, Number(e.seq));
  }
  return prev;
}

/**
 * The complete forgery of someone holding `key`: recompute every chain, re-sign every
 * checkpoint over the new heads and every seal over the new final heads, relinking the seal
 * log — all claiming key id `claimKeyId`. Afterwards the store is internally consistent.
 */
function resignEverything(db: DatabaseSync, key: SigningKey, claimKeyId: string): void {
  const heads = new Map<string, string[]>();
  for (const s of db.prepare('SELECT id FROM sessions').all() as Row[]) {
    const id = String(s.id);
    rechain(db, id);
    heads.set(id, events(db, id).map((e) => String(e.hash)));
  }
  const updCp = db.prepare('UPDATE checkpoints SET payload = ?, key_id = ?, signature = ? WHERE session_id = ? AND seq = ?');
  for (const c of db.prepare('SELECT * FROM checkpoints').all() as Row[]) {
    const sid = String(c.session_id);
    const seq = Number(c.seq);
    const payload = canonicalJson({ ...(JSON.parse(String(c.payload)) as Row), head: heads.get(sid)![seq], keyId: claimKeyId });
    updCp.run(payload, claimKeyId, key.sign(payload), sid, seq);
  }
  const updSeal = db.prepare('UPDATE seals SET payload = ?, hash = ?, key_id = ?, signature = ? WHERE position = ?');
  let prev = GENESIS_HASH;
  for (const s of db.prepare('SELECT * FROM seals ORDER BY position').all() as Row[]) {
    const chain = heads.get(String(s.session_id)) ?? [];
    const payload = canonicalJson({
      ...(JSON.parse(String(s.payload)) as Row), head: chain.length ? chain[chain.length - 1] : GENESIS_HASH, prevSealHash: prev, keyId: claimKeyId,
    });
    prev = sha256Hex(payload);
    updSeal.run(payload, prev, claimKeyId, key.sign(payload), Number(s.position));
  }
}

function editFirstQuery(db: DatabaseSync, sessionId: string, text: string): void {
  const r = db.prepare("UPDATE events SET data = ? WHERE session_id = ? AND seq = 1 AND type = 'query'").run(JSON.stringify({ text }), sessionId);
  assert.equal(r.changes, 1);
}

function deleteSession(db: DatabaseSync, sessionId: string, opts: { keepSeal?: boolean } = {}): void {
  db.prepare('DELETE FROM events WHERE session_id = ?').run(sessionId);
  db.prepare('DELETE FROM checkpoints WHERE session_id = ?').run(sessionId);
  if (!opts.keepSeal) db.prepare('DELETE FROM seals WHERE session_id = ?').run(sessionId);
  assert.equal(db.prepare('DELETE FROM sessions WHERE id = ?').run(sessionId).changes, 1);
}

// ---- the cases -----------------------------------------------------------------------------

test('the untouched store verifies: every session sealed and intact, the seal log complete', async () => {
  const r = await assertIntact(dataDir);
  assert.match(r.stdout, new RegExp(`^${SESSIONS} sessions \\(${SESSIONS} sealed and intact, 0 open\\), ${SESSIONS} seals in the log: all intact$`, 'm'));
  // And a copy (what every other test starts from) too.
  await assertIntact(tamper(() => {}));
});

test('UPDATE of an event\'s data is caught by the chain', async () => {
  const sid = byPosition[2];
  const dir = tamper((db) => {
    const r = db.prepare("UPDATE events SET data = replace(data, 'two', 'TWO') WHERE session_id = ? AND seq = 1").run(sid);
    assert.equal(r.changes, 1);
  });
  const lines = await assertBroken(dir, new RegExp(`^session ${sid}: event 1 \\(query\\) does not match its recorded hash`));
  assert.equal(lines.length, 1);
});

test('DELETE of one event is reported as a removed event', async () => {
  const sid = byPosition[3];
  const dir = tamper((db) => {
    assert.equal(db.prepare('DELETE FROM events WHERE session_id = ? AND seq = 2').run(sid).changes, 1);
  });
  const lines = await assertBroken(dir, new RegExp(`^session ${sid}: event 2 is missing: the sequence jumps from 1 to 3 \\(an event was removed\\)$`));
  assert.equal(lines.length, 1);
});

test('DELETE of a session\'s last event (truncated tail) is caught by its seal', async () => {
  const sid = byPosition[3];
  let count = 0;
  const dir = tamper((db) => {
    count = events(db, sid).length;
    assert.equal(db.prepare('DELETE FROM events WHERE session_id = ? AND seq = ?').run(sid, count - 1).changes, 1);
  });
  await assertBroken(dir, new RegExp(`^session ${sid}: the seal covers ${count} events but only ${count - 1} are present \\(events removed from the end: truncated\\)$`));
});

test('editing an event and recomputing the chain in the store is caught by the seal', async () => {
  const sid = byPosition[3];
  const dir = tamper((db) => {
    editFirstQuery(db, sid, "select 'innocent';");
    rechain(db, sid);
  });
  await assertBroken(dir, new RegExp(`^session ${sid}: the seal does not match the last event: the chain was recomputed after sealing`));
});

test('editing an event and recomputing the chain is caught by a checkpoint when one covers it', async () => {
  const sid = byPosition[2];
  let covering = -1;
  const dir = tamper((db) => {
    const cps = (db.prepare('SELECT seq FROM checkpoints WHERE session_id = ? ORDER BY seq').all(sid) as Row[]).map((c) => Number(c.seq));
    covering = cps.find((q) => q >= 1) ?? -1;
    assert.ok(covering >= 1, `a checkpoint should cover event 1, got ${cps.join(',')}`);
    editFirstQuery(db, sid, "select 'innocent';");
    rechain(db, sid);
  });
  await assertBroken(dir, new RegExp(`^session ${sid}: checkpoint at event ${covering} does not match the chain`));
});

test('DELETE of a whole session (row, events, checkpoints, seal) is caught by the seal log', async () => {
  const dir = tamper((db) => deleteSession(db, byPosition[2]));
  const lines = await assertBroken(dir, /^seal log position 2 is missing: the log jumps to 3 \(a sealed session was removed from the log\)$/);
  assert.equal(lines.length, 1, lines.join('\n'));
  const r = await verifyStore(dir);
  assert.match(r.stdout, new RegExp(`${SESSIONS - 1} sessions \\(${SESSIONS - 1} sealed and intact, 0 open\\), ${SESSIONS - 1} seals in the log`));
});

test('DELETE of the newest whole session is caught by the signed seal-log head, and the gateway refuses to continue the log', async () => {
  // Regression test for a verifier gap found in review (now fixed).
  const dir = tamper((db) => deleteSession(db, byPosition[SESSIONS]));
  await assertBroken(dir, new RegExp(`^the seal log ends at position ${SESSIONS - 1} but the gateway sealed up to position ${SESSIONS}: sealed sessions were removed from the end of the log$`));
  // Starting a gateway on the truncated store would reuse position ${SESSIONS} and bury the gap.
  const up = await run(process.execPath, [GATEHOUSE_BIN, 'up', '--data-dir', dir, '--http', '127.0.0.1:0', '--pg', '127.0.0.1:0'], { timeoutMs: 20_000 });
  assert.notEqual(up.code, 0, 'the gateway must not start on a truncated seal log');
  assert.match(up.stderr, new RegExp(`the seal log in the store ends at position ${SESSIONS - 1}, but this gateway sealed up to position ${SESSIONS}`));
});

test('DELETE of a session\'s row and events but not its seal is reported as missing from the store', async () => {
  const sid = byPosition[2];
  const dir = tamper((db) => deleteSession(db, sid, { keepSeal: true }));
  const lines = await assertBroken(dir, new RegExp(`^session ${sid} \\(seal log position 2\\) is missing from the store: it was deleted$`));
  assert.equal(lines.length, 1, lines.join('\n'));
});

test('DELETE of a seal row alone breaks the seal log and leaves its session unsealed', async () => {
  const sid = byPosition[2];
  const dir = tamper((db) => { assert.equal(db.prepare('DELETE FROM seals WHERE position = 2').run().changes, 1); });
  const lines = await assertBroken(dir, /^seal log position 2 is missing: the log jumps to 3/);
  assert.ok(lines.includes(`session ${sid}: the session has no seal (it was still open when exported, or its seal was removed)`), lines.join('\n'));
});

test('reordering two seals in the log is caught', async () => {
  const dir = tamper((db) => {
    // Swap the rows at positions 2 and 3 (position is the primary key: go through a free one).
    db.exec('UPDATE seals SET position = -1 WHERE position = 2; UPDATE seals SET position = 2 WHERE position = 3; UPDATE seals SET position = 3 WHERE position = -1;');
  });
  const lines = await assertBroken(dir, /^seal log position 2 does not say what its row says \(moved or reordered\)$/);
  assert.ok(lines.some((l) => l === `session ${byPosition[3]}: the seal belongs to another session or seal-log position`), lines.join('\n'));
});

test('swapping two seals\' payloads (rows keep their position and session) is caught', async () => {
  const dir = tamper((db) => {
    const s2 = db.prepare('SELECT * FROM seals WHERE position = 2').get() as Row;
    const s3 = db.prepare('SELECT * FROM seals WHERE position = 3').get() as Row;
    const upd = db.prepare('UPDATE seals SET payload = ?, hash = ?, key_id = ?, signature = ? WHERE position = ?');
    upd.run(String(s3.payload), String(s3.hash), String(s3.key_id), String(s3.signature), 2);
    upd.run(String(s2.payload), String(s2.hash), String(s2.key_id), String(s2.signature), 3);
  });
  await assertBroken(dir, /^seal log position 2 does not say what its row says \(moved or reordered\)$/);
});

test('DELETE of a checkpoint alone is not an integrity break while the seal holds', async () => {
  // Checkpoints protect a session while it is open; a sealed session is covered end to end by
  // its signed seal, so verify.ts does not require checkpoints to be present.
  const dir = tamper((db) => {
    assert.ok(db.prepare('DELETE FROM checkpoints WHERE session_id = ?').run(byPosition[2]).changes >= 1);
  });
  await assertIntact(dir);
});

test('an attacker key added to signing_keys and used to re-sign everything is refused: the trust anchor is <data-dir>/signing', async () => {
  const key = new SigningKey(generateKeyPairSync('ed25519').privateKey);
  const dir = tamper((db) => {
    editFirstQuery(db, byPosition[2], "select 'rewritten';");
    db.prepare('INSERT INTO signing_keys (key_id, public_key, created_at) VALUES (?, ?, ?)').run(key.keyId, key.publicKeyPem, Date.now());
    resignEverything(db, key, key.keyId);
  });
  await assertBroken(dir, new RegExp(`^seal log position 1 is signed by key ${key.keyId}, which is not a trusted key$`));
  // Without the key files, the signed seal-log head (also outside the database) still refuses
  // it: the re-signed seals no longer hash to the head the gateway wrote.
  const keyless = path.join(work, `copy-${++copies}`);
  cpSync(dir, keyless, { recursive: true });
  rmSync(path.join(keyless, 'signing'), { recursive: true });
  await assertBroken(keyless, /^seal log position \d+ is not the seal the gateway wrote there \(replaced\)$/);
  // The forgery itself is consistent: without both anchors in the data directory it would pass,
  // so it is the anchors, nothing else, that refuse it.
  const anchorless = path.join(work, `copy-${++copies}`);
  cpSync(keyless, anchorless, { recursive: true });
  rmSync(path.join(anchorless, 'seal-log.head'));
  await assertIntact(anchorless);
});

test('the signing_keys row\'s public key replaced by an attacker key and everything re-signed under the same key id is refused', async () => {
  // Regression test for a verifier gap found in review (now fixed).
  const key = new SigningKey(generateKeyPairSync('ed25519').privateKey);
  const dir = tamper((db) => {
    editFirstQuery(db, byPosition[2], "select 'rewritten';");
    assert.equal(db.prepare('UPDATE signing_keys SET public_key = ? WHERE key_id = ?').run(key.publicKeyPem, gatewayKeyId).changes, 1);
    resignEverything(db, key, gatewayKeyId);
  });
  assert.ok(readdirSync(path.join(dir, 'signing')).some((f) => f.endsWith('.pem')));
  await assertBroken(dir, /key|signature/);
});

test('editing the session row (identity name) so that it contradicts its seal is caught', async () => {
  // Regression test for a verifier gap found in review (now fixed).
  const sid = byPosition[2];
  const dir = tamper((db) => {
    assert.equal(db.prepare("UPDATE sessions SET identity_name = 'innocent-bot' WHERE id = ?").run(sid).changes, 1);
  });
  await assertBroken(dir, new RegExp(`session ${sid}`));
});

test('editing what the seal does not hold (application_name, auth method, target) is caught against the chained session.start event', async () => {
  const sid = byPosition[2];
  for (const [column, value, field] of [['application_name', 'nightly-report', 'applicationName'], ['auth_method', 'publickey', 'authMethod'], ['target_host', 'db.staging.internal', 'target']]) {
    const dir = tamper((db) => {
      assert.equal(db.prepare(`UPDATE sessions SET ${column} = ? WHERE id = ?`).run(value, sid).changes, 1);
    });
    await assertBroken(dir, new RegExp(`session ${sid}: the session row was altered: its ${field} \\(.*\\) differs from the recorded one`));
  }
});
