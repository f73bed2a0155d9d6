// Tampering with an exported bundle. One real psql session goes through a real gateway, is
// exported with `gatehouse sessions export`, and verifies offline. Then every test tampers with a
// fresh copy of that bundle the way a capable attacker would — editing events.jsonl (and the
// other files) AND recomputing the manifest's SHA-256 digests — so that what catches the
// tampering is the hash chain, the checkpoints, the seal and the signatures, not the manifest.
// Each case asserts `gatehouse verify` exits 1 with the message naming the first broken link.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, GATEHOUSE_BIN, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import { eventHash, GENESIS_HASH } from '../../src/integrity/hash-chain.ts';
import { canonicalJson } from '../../src/integrity/canonical-json.ts';
import { SigningKey, keyIdOf } from '../../src/integrity/signing-keys.ts';

interface BundleEvent { seq: number; ts: number; type: string; data: string; hash: string }
interface BundleCheckpoint { seq: number; payload: string; keyId: string; signature: string }
interface BundleSeal { position: number; payload: string; hash: string; keyId: string; signature: string }
interface BundleManifest {
  format: string; version: number; exportedAt: string;
  session: { id: string; identity: { id: string; name: string; kind: string; claims?: Record<string, string> | null }; connection: string; protocol: string; endReason: string; [k: string]: unknown };
  files: Record<string, string>;
}

let pg: PgCluster;
let gw: TestGateway;
let work: string;
/** The pristine bundle, exported by the real CLI. Tests only ever touch copies of it. */
let bundle: string;
/** A copy of the gateway's private signing key (PEM): the verifier's trust anchor. */
let gatewayKeyFile: string;
let gatewayKeyId: string;
let sessionId: string;
let pristineEvents: BundleEvent[];
let pristineCheckpoints: BundleCheckpoint[];
let copies = 0;

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

// ---- bundle access for the attacker --------------------------------------------------------

function fresh(): string {
  const dir = path.join(work, `copy-${++copies}`);
  cpSync(bundle, dir, { recursive: true });
  return dir;
}

function readJsonl<T>(file: string): T[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as T);
}

const writeJsonl = (file: string, rows: unknown[]): void => writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + (rows.length ? '\n' : ''));
const readEvents = (dir: string): BundleEvent[] => readJsonl<BundleEvent>(path.join(dir, 'events.jsonl'));
const readCheckpoints = (dir: string): BundleCheckpoint[] => readJsonl<BundleCheckpoint>(path.join(dir, 'checkpoints.jsonl'));
const readSeal = (dir: string): BundleSeal => JSON.parse(readFileSync(path.join(dir, 'seal.json'), 'utf8')) as BundleSeal;
const readManifest = (dir: string): BundleManifest => JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as BundleManifest;
const writeManifest = (dir: string, m: BundleManifest): void => writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');

/** What a capable attacker does after editing: list the files that now exist and record their SHA-256. */
function rehashManifest(dir: string): void {
  const m = readManifest(dir);
  const names = ['events.jsonl', 'checkpoints.jsonl', 'seal.json'].filter((n) => existsSync(path.join(dir, n)));
  if (existsSync(path.join(dir, 'keys'))) names.push(...readdirSync(path.join(dir, 'keys')).map((f) => `keys/${f}`));
  m.files = Object.fromEntries(names.map((n) => [n, sha256(readFileSync(path.join(dir, n), 'utf8'))]));
  writeManifest(dir, m);
}

function writeEvents(dir: string, events: BundleEvent[]): void {
  writeJsonl(path.join(dir, 'events.jsonl'), events);
  rehashManifest(dir);
}

function writeCheckpoints(dir: string, cps: BundleCheckpoint[]): void {
  writeJsonl(path.join(dir, 'checkpoints.jsonl'), cps);
  rehashManifest(dir);
}

function writeSeal(dir: string, seal: BundleSeal): void {
  writeFileSync(path.join(dir, 'seal.json'), JSON.stringify(seal, null, 2) + '\n');
  rehashManifest(dir);
}

/** Renumbers and rehashes the whole chain, as an attacker who knows the (public) chain format can. */
function rechain(events: BundleEvent[]): BundleEvent[] {
  let prev = GENESIS_HASH;
  return events.map((e, i) => {
    const hash = eventHash({ sessionId, seq: i, ts: e.ts, type: e.type, data: e.data }, prev);
    prev = hash;
    return { ...e, seq: i, hash };
  });
}

/** Changes the text of the recorded query at `seq` (keeps valid JSON). */
function withQueryText(e: BundleEvent, text: string): BundleEvent {
  assert.equal(e.type, 'query', `event ${e.seq} should be a query`);
  return { ...e, data: JSON.stringify({ ...(JSON.parse(e.data) as object), text }) };
}

function flipFirstBit(b64: string): string {
  const raw = Buffer.from(b64, 'base64');
  raw[0] ^= 0x01;
  return raw.toString('base64');
}

function attackerKey(): SigningKey {
  return new SigningKey(generateKeyPairSync('ed25519').privateKey);
}

// ---- running the real verifier ------------------------------------------------------------

async function verify(dir: string, extra: string[] = []): Promise<RunResult> {
  // Offline: no GATEHOUSE_URL, the gateway is not involved.
  return run(process.execPath, [GATEHOUSE_BIN, 'verify', dir, ...extra], { timeoutMs: 30_000 });
}

async function assertIntact(dir: string, extra: string[] = []): Promise<RunResult> {
  const r = await verify(dir, extra);
  assert.equal(r.code, 0, `expected the bundle to verify:\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^OK {2}session /m);
  assert.doesNotMatch(r.stdout, /BROKEN/);
  return r;
}

/** Exit 1 and exactly one `BROKEN  <message>` line whose message matches `expected`. */
async function assertBroken(dir: string, expected: RegExp, extra: string[] = []): Promise<string> {
  const r = await verify(dir, extra);
  const line = r.stdout.split('\n').find((l) => l.startsWith('BROKEN  '));
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}:\n${r.stdout}${r.stderr}`);
  assert.ok(line, `expected a BROKEN line:\n${r.stdout}${r.stderr}`);
  assert.doesNotMatch(r.stdout, /^OK /m);
  const message = line.slice('BROKEN  '.length);
  assert.match(message, expected);
  return message;
}

const re = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// ---- the recorded session ------------------------------------------------------------------

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-tamper-'));
  const config = path.join(work, 'gatehouse.yaml');
  // Checkpoints every 200 ms; the pg_sleep calls keep the session open long enough for
  // checkpoints to be signed in the middle of the chain.
  writeFileSync(config, 'recording:\n  checkpoint_interval_ms: 200\n');
  pg = await startPgCluster();
  gw = await startTestGateway({ dataDir: path.join(work, 'data'), args: ['--config', config] });
  const token = await gw.setupPostgres({ identity: 'mallory-target', connection: 'app', cluster: pg, kind: 'agent' });
  const script = [
    'select 1 as one;',
    'select pg_sleep(0.6);',
    'create temp table t (x int);',
    "insert into t values (1), (2), (3);",
    'select pg_sleep(0.6);',
    'select sum(x) from t;',
    "select 'the end';",
  ].join('\n') + '\n';
  const r = await run('psql', [gw.dsn('app', 'mallory-target'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'],
    { env: { ...process.env, PGPASSWORD: token }, input: script, timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /the end/);

  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--identity', 'mallory-target'])) as Array<{ id: string; endedAt: string | null }>;
  assert.equal(sessions.length, 1);
  sessionId = sessions[0].id;
  bundle = path.join(work, 'bundle');
  // The session has ended for psql, but its end record may still be committing: wait for it.
  for (let i = 0; i < 100; i++) {
    const s = JSON.parse(await gw.cliOk(['sessions', 'show', sessionId, '--json'])) as { session: { endedAt: string | null } };
    if (s.session.endedAt !== null) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  const out = await gw.cliOk(['sessions', 'export', sessionId, '--out', bundle]);
  assert.match(out, /sealed/);
  assert.doesNotMatch(out, /NOT sealed/);

  const signing = readdirSync(path.join(gw.dataDir, 'signing')).filter((f) => f.endsWith('.pem'));
  assert.equal(signing.length, 1, 'one signing key on first start');
  gatewayKeyFile = path.join(work, 'gateway-signing-key.pem');
  cpSync(path.join(gw.dataDir, 'signing', signing[0]), gatewayKeyFile);
  gatewayKeyId = keyIdOf(createPublicKey(readFileSync(gatewayKeyFile, 'utf8')));
  // Everything below is offline.
  await gw.stop();

  pristineEvents = readEvents(bundle);
  pristineCheckpoints = readCheckpoints(bundle);
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the exported bundle of a real psql session verifies offline', async () => {
  const types = pristineEvents.map((e) => e.type);
  assert.equal(types[0], 'session.start');
  assert.equal(types[types.length - 1], 'session.end');
  assert.equal(types.filter((t) => t === 'query').length, 7);
  assert.deepEqual(pristineEvents.map((e) => e.seq), pristineEvents.map((_, i) => i));
  assert.ok(pristineCheckpoints.length >= 2, `expected checkpoints during the pg_sleep calls, got ${pristineCheckpoints.length}`);
  const m = readManifest(bundle);
  assert.equal(m.session.id, sessionId);
  assert.deepEqual(Object.keys(m.files).sort(), ['checkpoints.jsonl', 'events.jsonl', `keys/${gatewayKeyId}.pem`, 'seal.json']);
  for (const [name, digest] of Object.entries(m.files)) assert.equal(sha256(readFileSync(path.join(bundle, name), 'utf8')), digest, name);

  const r = await assertIntact(bundle);
  assert.match(r.stdout, new RegExp(`OK {2}session ${sessionId}: ${pristineEvents.length} events, ${pristineCheckpoints.length} checkpoints, sealed at log position 1`));
  assert.match(r.stdout, /identity mallory-target \(agent\) on app; ended: client terminated/);
  assert.match(r.stdout, new RegExp(`signed by key ${gatewayKeyId}`));
  // Pinned to the gateway's key (given as its private key file), it is accepted as trusted.
  const pinned = await assertIntact(bundle, ['--trusted-key', gatewayKeyFile]);
  assert.match(pinned.stdout, /\(trusted\)/);
  // The rehash helper itself changes nothing on an untouched copy.
  const copy = fresh();
  rehashManifest(copy);
  await assertIntact(copy);
});

test('a naive edit without recomputing the manifest is caught by the manifest digest', async () => {
  const dir = fresh();
  const text = readFileSync(path.join(dir, 'events.jsonl'), 'utf8');
  writeFileSync(path.join(dir, 'events.jsonl'), text.replace('select sum(x) from t;', 'select sum(y) from t;'));
  await assertBroken(dir, /^events\.jsonl was modified after export \(its SHA-256 differs from the manifest\)$/);
});

test('editing one byte of an event\'s data is caught by the chain', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  const i = events.findIndex((e) => e.type === 'query' && e.data.includes('insert into t'));
  // One byte: the value 2 becomes 7 in the recorded statement text.
  const edited = events[i].data.replace('(2)', '(7)');
  assert.equal(edited.length, events[i].data.length);
  assert.notEqual(edited, events[i].data);
  events[i] = { ...events[i], data: edited };
  writeEvents(dir, events);
  await assertBroken(dir, new RegExp(`^event ${i} \\(query\\) does not match its recorded hash: its content, time or predecessor was changed`));
});

test('editing an event\'s timestamp is caught by the chain', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  events[2] = { ...events[2], ts: events[2].ts + 1 };
  writeEvents(dir, events);
  await assertBroken(dir, new RegExp(`^event 2 \\(${re(events[2].type)}\\) does not match its recorded hash`));
});

test('dropping one event is reported as a removed event', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  const i = events.findIndex((e) => e.type === 'query' && e.data.includes('create temp table'));
  events.splice(i, 1);
  writeEvents(dir, events);
  await assertBroken(dir, new RegExp(`^event ${i} is missing: the sequence jumps from ${i - 1} to ${i + 1} \\(an event was removed\\)$`));
});

test('dropping one event and renumbering the rest is caught by the chain', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  const i = events.findIndex((e) => e.type === 'query' && e.data.includes('create temp table'));
  events.splice(i, 1);
  writeEvents(dir, events.map((e, k) => ({ ...e, seq: k })));
  await assertBroken(dir, new RegExp(`^event ${i} \\(${re(events[i].type)}\\) does not match its recorded hash`));
});

test('swapping two events is reported as reordered, not as a removal', async () => {
  // Regression test for a verifier gap found in review (now fixed).
  const dir = fresh();
  const events = readEvents(dir);
  const i = events.findIndex((e) => e.type === 'query' && e.data.includes('insert into t'));
  [events[i], events[i + 1]] = [events[i + 1], events[i]];
  writeEvents(dir, events);
  const message = await assertBroken(dir, new RegExp(`^event ${i}\\b.*(reordered|out of order)`));
  assert.doesNotMatch(message, /removed/);
});

test('swapping two events and renumbering them is caught by the chain', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  const i = events.findIndex((e) => e.type === 'query' && e.data.includes('insert into t'));
  [events[i], events[i + 1]] = [events[i + 1], events[i]];
  writeEvents(dir, events.map((e, k) => ({ ...e, seq: k })));
  await assertBroken(dir, new RegExp(`^event ${i} \\(result\\) does not match its recorded hash: .*reordered`));
});

test('a duplicated event is reported as duplicated or out of order', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  events.splice(4, 0, events[3]);
  writeEvents(dir, events);
  await assertBroken(dir, /^event 3 appears again at position 4: events are duplicated or out of order/);
});

test('appending a forged event with a correct chain hash is caught by the seal\'s event count', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  const last = events[events.length - 1];
  const forged = { seq: events.length, ts: last.ts + 1000, type: 'query', data: JSON.stringify({ text: 'drop table audit_log' }), hash: '' };
  forged.hash = eventHash({ sessionId, seq: forged.seq, ts: forged.ts, type: forged.type, data: forged.data }, last.hash);
  writeEvents(dir, [...events, forged]);
  await assertBroken(dir, new RegExp(`^the seal covers ${events.length} events but ${events.length + 1} are present \\(events inserted or appended after sealing\\)$`));
});

test('inserting a forged event in the middle and recomputing the chain is caught by checkpoint or seal', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  const lastCp = Math.max(...readCheckpoints(dir).map((c) => c.seq));
  // After the last checkpoint: only the seal can tell.
  const at = events.length - 1;
  assert.ok(at > lastCp);
  events.splice(at, 0, { seq: 0, ts: events[at - 1].ts + 1, type: 'query', data: JSON.stringify({ text: 'grant all on everything to mallory' }), hash: '' });
  writeEvents(dir, rechain(events));
  await assertBroken(dir, new RegExp(`^the seal covers ${events.length - 1} events but ${events.length} are present`));
});

test('truncating the tail (dropping the last event) is caught by the seal', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  writeEvents(dir, events.slice(0, -1));
  await assertBroken(dir, new RegExp(`^the seal covers ${events.length} events but only ${events.length - 1} are present \\(events removed from the end: truncated\\)$`));
});

test('truncating the tail back past a checkpoint is caught by that checkpoint', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  const cps = readCheckpoints(dir).map((c) => c.seq).sort((a, b) => a - b);
  const lastCp = cps[cps.length - 1];
  // Keep events 0 .. lastCp-1: the last checkpoint now points past the end.
  writeEvents(dir, events.slice(0, lastCp));
  await assertBroken(dir, new RegExp(`^checkpoint at event ${lastCp} is beyond the last event ${lastCp - 1}: events were removed from the end \\(truncated\\)$`));
});

test('editing an event and recomputing the whole chain is caught by the checkpoint covering it', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  // Event 1 is the first query (select 1 as one). The first checkpoint at or after it is the
  // first one whose signed head no longer matches.
  const covering = Math.min(...readCheckpoints(dir).map((c) => c.seq).filter((q) => q >= 1));
  assert.ok(Number.isFinite(covering));
  events[1] = withQueryText(events[1], 'select 2 as one;');
  const forged = rechain(events);
  assert.notEqual(forged[forged.length - 1].hash, events[events.length - 1].hash);
  writeEvents(dir, forged);
  await assertBroken(dir, new RegExp(`^checkpoint at event ${covering} does not match the chain: events up to ${covering} were edited, inserted or removed and the chain recomputed$`));
});

test('editing an event after the last checkpoint and recomputing the chain is caught by the seal', async () => {
  const dir = fresh();
  const events = readEvents(dir);
  const lastCp = Math.max(...readCheckpoints(dir).map((c) => c.seq));
  // session.end is never covered by a checkpoint: the session leaves the open set as it ends.
  const i = events.length - 1;
  assert.equal(events[i].type, 'session.end');
  assert.ok(i > lastCp);
  events[i] = { ...events[i], data: JSON.stringify({ reason: 'client disconnected' }) };
  writeEvents(dir, rechain(events));
  await assertBroken(dir, /^the seal does not match the last event: the chain was recomputed after sealing \(events edited, inserted or removed\)$/);
});

test('removing seal.json (and its manifest entry) is reported as a missing seal', async () => {
  const dir = fresh();
  unlinkSync(path.join(dir, 'seal.json'));
  rehashManifest(dir);
  assert.equal(readManifest(dir).files['seal.json'], undefined);
  await assertBroken(dir, /^the session has no seal \(it was still open when exported, or its seal was removed\)$/);
});

test('removing seal.json but leaving the manifest is reported as a missing listed file', async () => {
  const dir = fresh();
  unlinkSync(path.join(dir, 'seal.json'));
  await assertBroken(dir, /^seal\.json is listed in the manifest but missing$/);
});

test('editing the seal (identity name) breaks its signature', async () => {
  const dir = fresh();
  const seal = readSeal(dir);
  assert.ok(seal.payload.includes('"name":"mallory-target"'));
  const payload = seal.payload.replace('"name":"mallory-target"', '"name":"innocent-bot"');
  // Even with the seal hash and the manifest made consistent, the signature no longer holds.
  writeSeal(dir, { ...seal, payload, hash: sha256(payload) });
  const m = readManifest(dir);
  m.session.identity.name = 'innocent-bot';
  writeManifest(dir, m);
  rehashManifest(dir);
  await assertBroken(dir, /^the seal: the signature is invalid \(the signed data or the key was changed\)$/);
});

test('editing the seal\'s log hash is caught', async () => {
  const dir = fresh();
  const seal = readSeal(dir);
  writeSeal(dir, { ...seal, hash: sha256('something else') });
  await assertBroken(dir, /^the seal hash does not match the seal \(the seal log link was altered\)$/);
});

test('editing the manifest\'s session identity is caught as a manifest/seal mismatch', async () => {
  for (const edit of [
    (m: BundleManifest) => { m.session.identity.name = 'innocent-bot'; },
    (m: BundleManifest) => { m.session.identity.kind = 'human'; },
    (m: BundleManifest) => { m.session.connection = 'staging'; },
  ]) {
    const dir = fresh();
    const m = readManifest(dir);
    edit(m);
    writeManifest(dir, m);
    await assertBroken(dir, /^manifest\.json describes the session differently from its seal and session\.start event: its (identity|connection) \(.*\) differs from the recorded one \(.*\)$/);
  }
});

test('every field of the manifest\'s session is checked: forged start and end times, target, application name, auth method, claims', async () => {
  const pristine = readManifest(bundle);
  assert.equal(pristine.version, 2);
  assert.deepEqual(Object.keys(pristine).sort(), ['files', 'format', 'session', 'version'], 'nothing unverifiable at the top (no exportedAt)');
  assert.ok(!('legalHold' in pristine.session), 'legal hold is store state, not recorded: not in the manifest');
  const cases: Array<[string, (m: BundleManifest) => void]> = [
    ['startedAt', (m) => { m.session.startedAt = '2020-01-01T00:00:00.000Z'; }],
    ['endedAt', (m) => { m.session.endedAt = new Date(Date.parse(String(m.session.endedAt)) + 3600_000).toISOString(); }],
    ['target', (m) => { m.session.target = { ...(m.session.target as object), host: 'db.staging.internal' }; }],
    ['applicationName', (m) => { m.session.applicationName = 'nightly-report'; }],
    ['authMethod', (m) => { m.session.authMethod = 'publickey'; }],
    ['identity', (m) => { m.session.identity = { ...m.session.identity, claims: { repository: 'org/app' } }; }],
    ['eventCount', (m) => { m.session.eventCount = Number(m.session.eventCount) - 1; }],
    ['recording', (m) => { m.session.recording = 'best-effort'; }],
    ['clientAddr', (m) => { m.session.clientAddr = '10.9.9.9'; }],
  ];
  for (const [field, edit] of cases) {
    const dir = fresh();
    const m = readManifest(dir);
    edit(m);
    writeManifest(dir, m);
    await assertBroken(dir, new RegExp(`^manifest\\.json describes the session differently from its seal and session\\.start event: its ${field} \\(.*\\) differs from the recorded one \\(.*\\)$`));
  }
  // A field nothing signed vouches for, in the session or at the top, is refused too.
  const extra = fresh();
  const m = readManifest(extra);
  m.session.approvedBy = 'security-team';
  writeManifest(extra, m);
  await assertBroken(extra, /^manifest\.json describes the session differently from its seal and session\.start event: its field "approvedBy" is vouched for by neither the seal nor the session\.start event$/);
  const top = fresh();
  writeManifest(top, { ...readManifest(top), exportedAt: '2020-01-01T00:00:00.000Z' });
  await assertBroken(top, /^manifest\.json has a field "exportedAt" that is not part of the bundle format$/);
  const old = fresh();
  writeManifest(old, { ...readManifest(old), version: 1 });
  await assertBroken(old, /^bundle format v1 is no longer accepted .*: export the session again$/);
});

test('a file the manifest does not account for fails verification: an added terminal-2.cast, listed or not', async () => {
  const cast = '{"version":2,"width":80,"height":24}\n[0.1,"o","$ uptime\\r\\n"]\n';
  const unlisted = fresh();
  writeFileSync(path.join(unlisted, 'terminal-2.cast'), cast);
  await assertBroken(unlisted, /^terminal-2\.cast is in the bundle but not in its manifest \(an added file\)$/);
  const listed = fresh();
  writeFileSync(path.join(listed, 'terminal-2.cast'), cast);
  const m = readManifest(listed);
  m.files['terminal-2.cast'] = sha256(cast);
  writeManifest(listed, m);
  await assertBroken(listed, /^terminal-2\.cast has no terminal events behind it$/);
  // Any other file, a key nothing lists, or a listed name outside the bundle's kinds.
  const notes = fresh();
  writeFileSync(path.join(notes, 'README.txt'), 'reviewed, all fine\n');
  await assertBroken(notes, /^README\.txt is in the bundle but not in its manifest \(an added file\)$/);
  const key = fresh();
  const other = generateKeyPairSync('ed25519').publicKey;
  writeFileSync(path.join(key, 'keys', `${keyIdOf(other)}.pem`), other.export({ format: 'pem', type: 'spki' }).toString());
  await assertBroken(key, new RegExp(`^keys/${keyIdOf(other)}\\.pem is in the bundle but not in its manifest \\(an added file\\)$`));
  const outside = fresh();
  const mo = readManifest(outside);
  mo.files['../escape.txt'] = sha256('x');
  writeManifest(outside, mo);
  await assertBroken(outside, /^manifest\.json lists "\.\.\/escape\.txt", which is not a file a bundle holds$/);
});

// Regression test for a verifier gap found in review (now fixed).
test('editing the manifest\'s identity id (vouched for by the seal) is caught', async () => {
  const dir = fresh();
  const m = readManifest(dir);
  const sealed = JSON.parse(readSeal(dir).payload) as { identity: { id: string } };
  assert.equal(m.session.identity.id, sealed.identity.id);
  m.session.identity.id = 'id_00000000000000000000';
  writeManifest(dir, m);
  await assertBroken(dir, /^manifest\.json describes the session differently from its seal/);
});

test('editing the manifest\'s end reason (vouched for by the seal) is caught', async () => {
  const dir = fresh();
  const m = readManifest(dir);
  const sealed = JSON.parse(readSeal(dir).payload) as { endReason: string };
  assert.equal(m.session.endReason, sealed.endReason);
  m.session.endReason = 'client disconnected';
  writeManifest(dir, m);
  await assertBroken(dir, /^manifest\.json describes the session differently from its seal/);
});

test('replacing the public key file with another Ed25519 key is reported as an unknown key', async () => {
  const dir = fresh();
  const other = generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' }).toString();
  // Same file name: the verifier derives key ids from the key itself, not from the name.
  writeFileSync(path.join(dir, 'keys', `${gatewayKeyId}.pem`), other);
  rehashManifest(dir);
  const firstCp = Math.min(...pristineCheckpoints.map((c) => c.seq));
  await assertBroken(dir, new RegExp(`^checkpoint at event ${firstCp} is signed by key ${gatewayKeyId}, which is not in the bundle \\(unknown key\\)$`));
});

test('replacing the key file and dropping the checkpoints still leaves the seal signed by an unknown key', async () => {
  const dir = fresh();
  rmSync(path.join(dir, 'keys'), { recursive: true });
  mkdirSync(path.join(dir, 'keys'));
  const other = generateKeyPairSync('ed25519').publicKey;
  writeFileSync(path.join(dir, 'keys', `${keyIdOf(other)}.pem`), other.export({ format: 'pem', type: 'spki' }).toString());
  writeCheckpoints(dir, []);
  await assertBroken(dir, new RegExp(`^the seal is signed by key ${gatewayKeyId}, which is not in the bundle \\(unknown key\\)$`));
});

/**
 * The full forgery: edit a statement, recompute the chain, re-sign every checkpoint and the
 * seal with the attacker's own key, and ship the attacker's public key in keys/. The bundle is
 * then internally consistent; only pinning the gateway's key can refuse it.
 */
function forgeWithOwnKey(dir: string, key: SigningKey): void {
  const events = readEvents(dir);
  const i = events.findIndex((e) => e.type === 'query' && e.data.includes('insert into t'));
  events[i] = withQueryText(events[i], 'insert into t values (42);');
  const chain = rechain(events);
  writeJsonl(path.join(dir, 'events.jsonl'), chain);
  const cps = readCheckpoints(dir).map((c) => {
    const p = JSON.parse(c.payload) as Record<string, unknown>;
    const payload = canonicalJson({ ...p, head: chain[c.seq].hash, keyId: key.keyId });
    return { seq: c.seq, payload, keyId: key.keyId, signature: key.sign(payload) };
  });
  writeJsonl(path.join(dir, 'checkpoints.jsonl'), cps);
  const seal = readSeal(dir);
  const sp = JSON.parse(seal.payload) as Record<string, unknown>;
  const payload = canonicalJson({ ...sp, head: chain[chain.length - 1].hash, keyId: key.keyId });
  writeFileSync(path.join(dir, 'seal.json'), JSON.stringify({ position: seal.position, payload, hash: sha256(payload), keyId: key.keyId, signature: key.sign(payload) }, null, 2) + '\n');
  rmSync(path.join(dir, 'keys'), { recursive: true });
  mkdirSync(path.join(dir, 'keys'));
  writeFileSync(path.join(dir, 'keys', `${key.keyId}.pem`), key.publicKeyPem);
  rehashManifest(dir);
}

test('re-signing everything with an attacker key passes unpinned, but --trusted-key <gateway key> refuses it', async () => {
  const dir = fresh();
  const key = attackerKey();
  assert.notEqual(key.keyId, gatewayKeyId);
  forgeWithOwnKey(dir, key);
  // Without a trust anchor the forgery is internally consistent: the verifier says so, and
  // tells the reviewer which key signed it (to compare with `gatehouse keys list`).
  const r = await assertIntact(dir);
  assert.match(r.stdout, new RegExp(`signed by key ${key.keyId} — compare with`));
  assert.doesNotMatch(r.stdout, new RegExp(gatewayKeyId));
  // Pinned to the gateway's key (its private key file from <data-dir>/signing), it is refused.
  const firstCp = Math.min(...pristineCheckpoints.map((c) => c.seq));
  await assertBroken(dir, new RegExp(`^checkpoint at event ${firstCp} is signed by key ${key.keyId}, which is not a trusted key$`), ['--trusted-key', gatewayKeyFile]);
  // Also when given the gateway's public key rather than its private key file.
  const pub = path.join(work, 'gateway-public.pem');
  writeFileSync(pub, createPublicKey(readFileSync(gatewayKeyFile, 'utf8')).export({ format: 'pem', type: 'spki' }).toString());
  await assertBroken(dir, /which is not a trusted key$/, ['--trusted-key', pub]);
});

test('re-signing only the seal with an attacker key is refused when pinned', async () => {
  const dir = fresh();
  const key = attackerKey();
  writeCheckpoints(dir, []);
  const seal = readSeal(dir);
  const payload = canonicalJson({ ...(JSON.parse(seal.payload) as Record<string, unknown>), keyId: key.keyId });
  writeFileSync(path.join(dir, 'keys', `${key.keyId}.pem`), key.publicKeyPem);
  writeSeal(dir, { position: seal.position, payload, hash: sha256(payload), keyId: key.keyId, signature: key.sign(payload) });
  await assertIntact(dir);
  await assertBroken(dir, new RegExp(`^the seal is signed by key ${key.keyId}, which is not a trusted key$`), ['--trusted-key', gatewayKeyFile]);
});

test('claiming the gateway\'s key id while signing with another key is an invalid signature', async () => {
  // The attacker keeps keyId = the gateway's in every payload and signs with their own key; the
  // bundle still carries the gateway's public key, so the signature cannot hold.
  const dir = fresh();
  const key = attackerKey();
  writeCheckpoints(dir, []);
  const seal = readSeal(dir);
  writeSeal(dir, { ...seal, signature: key.sign(seal.payload) });
  await assertBroken(dir, /^the seal: the signature is invalid \(the signed data or the key was changed\)$/);
});

test('removing a checkpoint alone is not an integrity break while the seal holds', async () => {
  // Checkpoints bound what can be lost or rewritten while a session is still open; once the
  // session is sealed, the seal's signed head and count cover every event, so a missing
  // checkpoint does not make the record less trustworthy. verify.ts checks the checkpoints
  // that are present and does not require any: the bundle stays valid.
  const dir = fresh();
  const cps = readCheckpoints(dir);
  writeCheckpoints(dir, cps.slice(1));
  const r = await assertIntact(dir);
  assert.match(r.stdout, new RegExp(`${pristineEvents.length} events, ${cps.length - 1} checkpoints, sealed`));
  // ... but a checkpoint moved to another position is caught.
  const moved = fresh();
  const c = cps[0];
  writeCheckpoints(moved, [{ ...c, seq: c.seq + 1 }, ...cps.slice(1)]);
  await assertBroken(moved, new RegExp(`^checkpoint at event ${c.seq + 1} belongs to another session or position$`));
});

test('a flipped bit in a checkpoint signature is an invalid signature', async () => {
  const dir = fresh();
  const cps = readCheckpoints(dir).sort((a, b) => a.seq - b.seq);
  cps[0] = { ...cps[0], signature: flipFirstBit(cps[0].signature) };
  writeCheckpoints(dir, cps);
  await assertBroken(dir, new RegExp(`^checkpoint at event ${cps[0].seq}: the signature is invalid \\(the signed data or the key was changed\\)$`));
});

test('a flipped bit in the seal signature is an invalid signature', async () => {
  const dir = fresh();
  const seal = readSeal(dir);
  writeSeal(dir, { ...seal, signature: flipFirstBit(seal.signature) });
  await assertBroken(dir, /^the seal: the signature is invalid \(the signed data or the key was changed\)$/);
});

test('a checkpoint payload edited to vouch for a forged head is an invalid signature', async () => {
  const dir = fresh();
  const cps = readCheckpoints(dir).sort((a, b) => a.seq - b.seq);
  const p = JSON.parse(cps[0].payload) as Record<string, unknown>;
  cps[0] = { ...cps[0], payload: canonicalJson({ ...p, head: sha256('forged') }) };
  writeCheckpoints(dir, cps);
  await assertBroken(dir, new RegExp(`^checkpoint at event ${cps[0].seq}: the signature is invalid`));
});
