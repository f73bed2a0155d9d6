// Unit tests of the integrity primitives: canonical JSON, the event hash chain, signing keys,
// and the verifiers of one session's evidence and of the seal log, on synthetic records signed
// with freshly generated Ed25519 keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { canonicalJson } from '../../src/integrity/canonical-json.ts';
import { eventHash, GENESIS_HASH, sha256Hex, type ChainedEvent } from '../../src/integrity/hash-chain.ts';
import { SigningKey, keyIdOf, loadSigningKey, rotateSigningKey, verifySignature } from '../../src/integrity/signing-keys.ts';
import { signCheckpoint, signSeal, type SealPayload } from '../../src/integrity/payloads.ts';
import {
  verifySealLog, verifySessionEvidence, type RecordedEvent, type SealLogEntry, type SessionEvidence, type SignedCheckpoint, type SignedSeal,
} from '../../src/integrity/verify.ts';
import type { SessionRow } from '../../src/store/types.ts';

const newKey = (): SigningKey => new SigningKey(generateKeyPairSync('ed25519').privateKey);

// ---- canonical JSON --------------------------------------------------------------------------

test('canonicalJson: key order does not matter, at any depth', () => {
  const a = { b: 1, a: { z: [3, { y: 1, x: 2 }], m: 'x' }, c: null };
  const b = { c: null, a: { m: 'x', z: [3, { x: 2, y: 1 }] }, b: 1 };
  assert.equal(canonicalJson(a), canonicalJson(b));
  assert.equal(canonicalJson(a), '{"a":{"m":"x","z":[3,{"x":2,"y":1}]},"b":1,"c":null}');
});

test('canonicalJson: no whitespace, arrays keep their order, undefined members are dropped', () => {
  assert.equal(canonicalJson([3, 1, 2]), '[3,1,2]');
  assert.notEqual(canonicalJson([1, 2]), canonicalJson([2, 1]));
  assert.equal(canonicalJson({ a: undefined, b: 'x y' }), '{"b":"x y"}');
  assert.equal(canonicalJson({}), '{}');
  assert.equal(canonicalJson([]), '[]');
  assert.equal(canonicalJson('s'), '"s"');
  assert.equal(canonicalJson(null), 'null');
  assert.equal(canonicalJson(true), 'true');
});

test('canonicalJson: strings are escaped as JSON and the output parses back to the same value', () => {
  const v = { 'k"ey': 'line\nbreak "quoted" \\ ü 🙂', n: -1.5e-7, nested: { arr: [{ b: 2, a: 1 }] } };
  const text = canonicalJson(v);
  assert.deepEqual(JSON.parse(text), v);
  assert.ok(!text.includes('\n'));
});

test('canonicalJson: non-finite numbers are refused', () => {
  assert.throws(() => canonicalJson({ a: Number.NaN }), /non-finite/);
  assert.throws(() => canonicalJson([Number.POSITIVE_INFINITY]), /non-finite/);
});

// ---- the hash chain --------------------------------------------------------------------------

const base: ChainedEvent = { sessionId: 's_abc', seq: 3, ts: 1_700_000_000_000_000, type: 'query', data: '{"text":"select 1"}' };
const prevHash = sha256Hex('previous');

test('eventHash: deterministic SHA-256 hex, as specified (header lines, then the data bytes)', () => {
  const h = eventHash(base, prevHash);
  assert.match(h, /^[0-9a-f]{64}$/);
  assert.equal(eventHash({ ...base }, prevHash), h);
  const expected = createHash('sha256')
    .update(`gatehouse-event-v1\n${base.sessionId}\n${base.seq}\n${base.ts}\n${base.type}\n${prevHash}\n${base.data}`).digest('hex');
  assert.equal(h, expected);
});

test('eventHash: every field and the predecessor change the hash', () => {
  const h = eventHash(base, prevHash);
  const variants: Array<[string, string]> = [
    ['sessionId', eventHash({ ...base, sessionId: 's_abd' }, prevHash)],
    ['seq', eventHash({ ...base, seq: 4 }, prevHash)],
    ['ts', eventHash({ ...base, ts: base.ts + 1 }, prevHash)],
    ['type', eventHash({ ...base, type: 'execute' }, prevHash)],
    ['data (one byte)', eventHash({ ...base, data: '{"text":"select 2"}' }, prevHash)],
    ['data (trailing space)', eventHash({ ...base, data: base.data + ' ' }, prevHash)],
    ['prevHash', eventHash(base, GENESIS_HASH)],
  ];
  for (const [field, v] of variants) assert.notEqual(v, h, `changing ${field} must change the hash`);
  assert.equal(new Set(variants.map(([, v]) => v)).size, variants.length);
});

test('eventHash: moving text across the field boundary changes the hash', () => {
  // type and data are separated by the predecessor hash, so text cannot slide between them.
  const a = eventHash({ ...base, type: 'query', data: 'xy' }, prevHash);
  const b = eventHash({ ...base, type: 'queryx', data: 'y' }, prevHash);
  assert.notEqual(a, b);
  assert.equal(GENESIS_HASH, '0'.repeat(64));
});

// ---- signing keys ----------------------------------------------------------------------------

test('SigningKey: key id is 32 hex chars of SHA-256 over the raw public key; signatures verify only for that key and payload', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const key = new SigningKey(privateKey);
  assert.match(key.keyId, /^[0-9a-f]{32}$/);
  assert.equal(key.keyId, keyIdOf(publicKey));
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  assert.equal(key.keyId, createHash('sha256').update(raw).digest('hex').slice(0, 32));
  const sig = key.sign('payload');
  assert.equal(verifySignature(key.publicKeyPem, 'payload', sig), true);
  assert.equal(verifySignature(key.publicKeyPem, 'payload ', sig), false);
  assert.equal(verifySignature(newKey().publicKeyPem, 'payload', sig), false);
  assert.equal(verifySignature(key.publicKeyPem, 'payload', 'not base64 at all!'), false);
  assert.equal(verifySignature('not a pem', 'payload', sig), false);
});

test('SigningKey: refuses a non-Ed25519 key', () => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  assert.throws(() => new SigningKey(privateKey), /Ed25519/);
});

test('loadSigningKey: creates a 0600 key on first use, reloads it, and a rotation becomes current', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-keys-'));
  try {
    const signing = path.join(dir, 'signing');
    const first = loadSigningKey(signing);
    const files = readdirSync(signing);
    assert.equal(files.length, 1);
    assert.match(files[0], /^key-\d{15}\.pem$/);
    assert.equal(statSync(path.join(signing, files[0])).mode & 0o777, 0o600);
    assert.equal(loadSigningKey(signing).keyId, first.keyId);
    // Key files are named by creation time in ms: make sure the next one is in a later ms.
    const t = Date.now();
    while (Date.now() === t) { /* spin */ }
    const second = rotateSigningKey(signing);
    assert.notEqual(second.keyId, first.keyId);
    assert.equal(readdirSync(signing).length, 2);
    assert.equal(loadSigningKey(signing).keyId, second.keyId);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- synthetic sessions ----------------------------------------------------------------------

const SID = 's_synthetic0000000000';

function sessionRow(id = SID): SessionRow {
  return {
    id, protocol: 'postgres', identityId: 'id_1', identityName: 'alice', identityKind: 'agent', clientAddr: '127.0.0.1:5000',
    applicationName: 'psql', connectionId: 'conn_1', connectionName: 'app', targetHost: '127.0.0.1', targetPort: 5432,
    targetDatabase: 'app', targetUser: 'app', recordingMode: 'durable', startedAt: 1_700_000_000_000_000, endedAt: null, endReason: null, eventCount: 0,
  };
}

function chain(sessionId: string, items: Array<{ type: string; data: unknown }>): RecordedEvent[] {
  let prev = GENESIS_HASH;
  return items.map((it, seq) => {
    const e = { seq, ts: 1_700_000_000_000_000 + seq * 1000, type: it.type, data: JSON.stringify(it.data) };
    prev = eventHash({ sessionId, ...e }, prev);
    return { ...e, hash: prev };
  });
}

function rechain(sessionId: string, events: RecordedEvent[]): RecordedEvent[] {
  let prev = GENESIS_HASH;
  return events.map((e, seq) => {
    prev = eventHash({ sessionId, seq, ts: e.ts, type: e.type, data: e.data }, prev);
    return { ...e, seq, hash: prev };
  });
}

interface Fixture { key: SigningKey; events: RecordedEvent[]; checkpoints: SignedCheckpoint[]; seal: SignedSeal; evidence: SessionEvidence }

/** A sealed session of 8 events with checkpoints at 2 and 5, signed by `key`. */
function fixture(key = newKey(), position = 1, prevSealHash = GENESIS_HASH, sessionId = SID): Fixture {
  const events = chain(sessionId, [
    { type: 'session.start', data: { protocol: 'postgres' } },
    { type: 'query', data: { text: 'select 1' } },
    { type: 'result', data: { ref: 1, tag: 'SELECT 1' } },
    { type: 'query', data: { text: 'update t set x = 1' } },
    { type: 'result', data: { ref: 3, tag: 'UPDATE 1' } },
    { type: 'query', data: { text: 'delete from t' } },
    { type: 'result', data: { ref: 5, tag: 'DELETE 9' } },
    { type: 'session.end', data: { reason: 'client terminated' } },
  ]);
  const checkpoints = [2, 5].map((seq) => signCheckpoint(key, sessionId, seq, events[seq].hash, events[seq].ts + 10));
  const last = events[events.length - 1];
  const seal = signSeal(key, 'gw_test', position, prevSealHash, sessionRow(sessionId), { endedAt: last.ts, endReason: 'client terminated', eventCount: events.length, head: last.hash });
  const keys = new Map([[key.keyId, key.publicKeyPem]]);
  return { key, events, checkpoints, seal, evidence: { sessionId, events, checkpoints, seal, keys } };
}

function problemOf(ev: SessionEvidence): string {
  const r = verifySessionEvidence(ev);
  assert.equal(r.ok, false, 'expected the evidence to be broken');
  assert.ok(r.problem);
  return r.problem;
}

test('verifySessionEvidence: an intact sealed session verifies and reports its seal and keys', () => {
  const f = fixture();
  const r = verifySessionEvidence(f.evidence);
  assert.equal(r.ok, true, r.problem ?? '');
  assert.equal(r.problem, undefined);
  assert.equal(r.sealed, true);
  assert.equal(r.events, 8);
  assert.equal(r.checkpoints, 2);
  assert.deepEqual(r.keyIds, [f.key.keyId]);
  assert.equal(r.seal?.identity.name, 'alice');
  assert.equal(r.seal?.eventCount, 8);
  assert.equal(r.seal?.head, f.events[7].hash);
  // Pinned to the signer: still fine.
  assert.equal(verifySessionEvidence({ ...f.evidence, trustedKeyIds: new Set([f.key.keyId]) }).ok, true);
});

test('verifySessionEvidence: a sealed session without events verifies (seal head is the genesis hash)', () => {
  const key = newKey();
  const seal = signSeal(key, 'gw_test', 1, GENESIS_HASH, sessionRow(), { endedAt: 1, endReason: 'refused: x', eventCount: 0, head: GENESIS_HASH });
  const r = verifySessionEvidence({ sessionId: SID, events: [], checkpoints: [], seal, keys: new Map([[key.keyId, key.publicKeyPem]]) });
  assert.equal(r.ok, true, r.problem ?? '');
});

test('verifySessionEvidence: an edited event is named by position and type', () => {
  const f = fixture();
  const events = f.events.map((e) => (e.seq === 3 ? { ...e, data: e.data.replace('x = 1', 'x = 2') } : e));
  assert.match(problemOf({ ...f.evidence, events }), /^event 3 \(query\) does not match its recorded hash: its content, time or predecessor was changed/);
});

test('verifySessionEvidence: a removed event is named as missing', () => {
  const f = fixture();
  const events = f.events.filter((e) => e.seq !== 4);
  assert.equal(problemOf({ ...f.evidence, events }), 'event 4 is missing: the sequence jumps from 3 to 5 (an event was removed)');
});

test('verifySessionEvidence: a duplicated event is named as duplicated or out of order', () => {
  const f = fixture();
  const events = [...f.events.slice(0, 4), f.events[3], ...f.events.slice(4)];
  assert.match(problemOf({ ...f.evidence, events }), /^event 3 appears again at position 4: events are duplicated or out of order \(reordered\)$/);
});

test('verifySessionEvidence: a checkpoint catches an edit with the chain recomputed up to it', () => {
  const f = fixture();
  const edited = f.events.map((e) => (e.seq === 1 ? { ...e, data: '{"text":"select 2"}' } : e));
  const r = problemOf({ ...f.evidence, events: rechain(SID, edited) });
  assert.equal(r, 'checkpoint at event 2 does not match the chain: events up to 2 were edited, inserted or removed and the chain recomputed');
});

test('verifySessionEvidence: the seal catches an edit after the last checkpoint with the chain recomputed', () => {
  const f = fixture();
  const edited = f.events.map((e) => (e.seq === 6 ? { ...e, data: '{"ref":5,"tag":"DELETE 0"}' } : e));
  assert.match(problemOf({ ...f.evidence, events: rechain(SID, edited) }), /^the seal does not match the last event: the chain was recomputed after sealing/);
});

test('verifySessionEvidence: truncation is caught by a checkpoint beyond the end, or by the seal count', () => {
  const f = fixture();
  assert.equal(problemOf({ ...f.evidence, events: f.events.slice(0, 5) }),
    'checkpoint at event 5 is beyond the last event 4: events were removed from the end (truncated)');
  assert.equal(problemOf({ ...f.evidence, events: f.events.slice(0, 7) }),
    'the seal covers 8 events but only 7 are present (events removed from the end: truncated)');
});

test('verifySessionEvidence: an appended event with a valid chain hash is caught by the seal count', () => {
  const f = fixture();
  const last = f.events[7];
  const extra = { seq: 8, ts: last.ts + 1, type: 'query', data: '{"text":"drop table t"}', hash: '' };
  extra.hash = eventHash({ sessionId: SID, ...extra }, last.hash);
  assert.equal(problemOf({ ...f.evidence, events: [...f.events, extra] }), 'the seal covers 8 events but 9 are present (events inserted or appended after sealing)');
});

test('verifySessionEvidence: a missing seal, or one whose hash or signature does not match', () => {
  const f = fixture();
  assert.equal(problemOf({ ...f.evidence, seal: null }), 'the session has no seal (it was still open when exported, or its seal was removed)');
  assert.equal(verifySessionEvidence({ ...f.evidence, seal: null }).sealed, false);
  assert.equal(problemOf({ ...f.evidence, seal: { ...f.seal, hash: sha256Hex('x') } }), 'the seal hash does not match the seal (the seal log link was altered)');
  const payload = f.seal.payload.replace('"alice"', '"mallory"');
  assert.equal(problemOf({ ...f.evidence, seal: { ...f.seal, payload, hash: sha256Hex(payload) } }),
    'the seal: the signature is invalid (the signed data or the key was changed)');
});

test('verifySessionEvidence: a valid seal of another session or position is refused', () => {
  const f = fixture();
  const other = fixture(f.key, 1, GENESIS_HASH, 's_other000000000000000');
  assert.equal(problemOf({ ...f.evidence, seal: other.seal }), 'the seal belongs to another session or seal-log position');
  assert.equal(problemOf({ ...f.evidence, seal: { ...f.seal, position: 2 } }), 'the seal belongs to another session or seal-log position');
});

test('verifySessionEvidence: a valid checkpoint of another session is refused', () => {
  const f = fixture();
  const foreign = signCheckpoint(f.key, 's_other000000000000000', 2, f.events[2].hash, 1);
  assert.equal(problemOf({ ...f.evidence, checkpoints: [foreign] }), 'checkpoint at event 2 belongs to another session or position');
});

test('verifySessionEvidence: unknown, untrusted and wrong keys', () => {
  const f = fixture();
  assert.equal(problemOf({ ...f.evidence, keys: new Map() }),
    `checkpoint at event 2 is signed by key ${f.key.keyId}, which is not in the bundle (unknown key)`);
  assert.equal(problemOf({ ...f.evidence, trustedKeyIds: new Set([newKey().keyId]) }),
    `checkpoint at event 2 is signed by key ${f.key.keyId}, which is not a trusted key`);
  // The right key id mapped to someone else's public key: signatures fail.
  assert.equal(problemOf({ ...f.evidence, keys: new Map([[f.key.keyId, newKey().publicKeyPem]]) }),
    'checkpoint at event 2: the signature is invalid (the signed data or the key was changed)');
  // Without checkpoints, the seal is the first signed item.
  assert.equal(problemOf({ ...f.evidence, checkpoints: [], keys: new Map() }),
    `the seal is signed by key ${f.key.keyId}, which is not in the bundle (unknown key)`);
});

test('verifySessionEvidence: a flipped signature bit is an invalid signature', () => {
  const f = fixture();
  const flip = (b64: string): string => { const b = Buffer.from(b64, 'base64'); b[10] ^= 0x80; return b.toString('base64'); };
  const cps = [{ ...f.checkpoints[0], signature: flip(f.checkpoints[0].signature) }, f.checkpoints[1]];
  assert.equal(problemOf({ ...f.evidence, checkpoints: cps }), 'checkpoint at event 2: the signature is invalid (the signed data or the key was changed)');
  assert.equal(problemOf({ ...f.evidence, seal: { ...f.seal, signature: flip(f.seal.signature) } }),
    'the seal: the signature is invalid (the signed data or the key was changed)');
});

test('verifySessionEvidence: a signed payload that is not JSON is reported, not thrown', () => {
  const f = fixture();
  const payload = 'not json';
  const bad = { seq: 2, payload, keyId: f.key.keyId, signature: f.key.sign(payload) };
  assert.equal(problemOf({ ...f.evidence, checkpoints: [bad] }), 'checkpoint at event 2 is not valid JSON');
});

test('verifySessionEvidence: everything re-signed by another key passes unless the verifier pins its trusted keys', () => {
  const f = fixture();
  const attacker = newKey();
  const forged = fixture(attacker);
  forged.evidence.keys.set(f.key.keyId, f.key.publicKeyPem);
  assert.equal(verifySessionEvidence(forged.evidence).ok, true);
  assert.equal(problemOf({ ...forged.evidence, trustedKeyIds: new Set([f.key.keyId]) }),
    `checkpoint at event 2 is signed by key ${attacker.keyId}, which is not a trusted key`);
});

test('verifySessionEvidence: checkpoints are optional once sealed, and checked in seq order', () => {
  const f = fixture();
  assert.equal(verifySessionEvidence({ ...f.evidence, checkpoints: [] }).ok, true);
  // Given out of order, the earliest broken checkpoint is still the one named.
  const edited = rechain(SID, f.events.map((e) => (e.seq === 1 ? { ...e, data: '{}' } : e)));
  assert.match(problemOf({ ...f.evidence, events: edited, checkpoints: [...f.checkpoints].reverse() }), /^checkpoint at event 2 /);
});

// ---- the seal log ----------------------------------------------------------------------------

function sealLog(key: SigningKey, n: number): SealLogEntry[] {
  const out: SealLogEntry[] = [];
  let prev = GENESIS_HASH;
  for (let i = 1; i <= n; i++) {
    const s = signSeal(key, 'gw_test', i, prev, sessionRow(`s_log${i}`), { endedAt: i, endReason: 'client terminated', eventCount: 2, head: sha256Hex(`head${i}`) });
    out.push(s);
    prev = s.hash;
  }
  return out;
}

test('verifySealLog: an intact log (and an empty one) passes', () => {
  const key = newKey();
  const keys = new Map([[key.keyId, key.publicKeyPem]]);
  assert.equal(verifySealLog(sealLog(key, 4), keys), null);
  assert.equal(verifySealLog(sealLog(key, 4), keys, new Set([key.keyId])), null);
  assert.equal(verifySealLog([], keys), null);
  const log = sealLog(key, 2);
  const p = JSON.parse(log[1].payload) as SealPayload;
  assert.equal(p.prevSealHash, log[0].hash);
  assert.equal(log[0].hash, sha256Hex(log[0].payload));
});

test('verifySealLog: a removed seal is a missing position', () => {
  const key = newKey();
  const log = sealLog(key, 4);
  assert.equal(verifySealLog([log[0], log[2], log[3]], new Map([[key.keyId, key.publicKeyPem]])),
    'seal log position 2 is missing: the log jumps to 3 (a sealed session was removed from the log)');
  assert.equal(verifySealLog(log.slice(1), new Map([[key.keyId, key.publicKeyPem]])),
    'seal log position 1 is missing: the log jumps to 2 (a sealed session was removed from the log)');
});

test('verifySealLog: reordered seals are named as moved or reordered', () => {
  const key = newKey();
  const log = sealLog(key, 4);
  const keys = new Map([[key.keyId, key.publicKeyPem]]);
  // Rows renumbered to hide the swap: the signed payload still says where each seal belongs.
  const swapped = [log[0], { ...log[2], position: 2 }, { ...log[1], position: 3 }, log[3]];
  assert.equal(verifySealLog(swapped, keys), 'seal log position 2 does not say what its row says (moved or reordered)');
});

test('verifySealLog: a seal re-signed into a position with the wrong predecessor breaks the link', () => {
  const key = newKey();
  const log = sealLog(key, 3);
  // Position 2 re-signed (by the real key) as if it followed the genesis: a forged insertion.
  const forged = signSeal(key, 'gw_test', 2, GENESIS_HASH, sessionRow('s_log2'), { endedAt: 2, endReason: 'client terminated', eventCount: 2, head: sha256Hex('head2') });
  assert.equal(verifySealLog([log[0], forged, log[2]], new Map([[key.keyId, key.publicKeyPem]])),
    'seal log position 2 does not link to position 1 (seals removed, inserted or reordered)');
});

test('verifySealLog: unknown key, untrusted key, invalid signature, hash mismatch, malformed payload', () => {
  const key = newKey();
  const log = sealLog(key, 3);
  const keys = new Map([[key.keyId, key.publicKeyPem]]);
  assert.equal(verifySealLog(log, new Map()), `seal log position 1 is signed by unknown key ${key.keyId}`);
  const other = newKey();
  assert.equal(verifySealLog(log, keys, new Set([other.keyId])), `seal log position 1 is signed by key ${key.keyId}, which is not a trusted key`);
  const sig = Buffer.from(log[1].signature, 'base64');
  sig[0] ^= 1;
  assert.equal(verifySealLog([log[0], { ...log[1], signature: sig.toString('base64') }, log[2]], keys), 'seal log position 2: the signature is invalid');
  assert.equal(verifySealLog([log[0], log[1], { ...log[2], hash: sha256Hex('x') }], keys), 'seal log position 3: the hash does not match the seal');
  const junk = 'junk';
  assert.equal(verifySealLog([{ gatewayId: 'gw_test', position: 1, sessionId: 's_log1', payload: junk, hash: sha256Hex(junk), keyId: key.keyId, signature: key.sign(junk) }], keys),
    'seal log position 1 is not valid JSON');
  // The row's session id must be the one the payload names.
  assert.equal(verifySealLog([{ ...log[0], sessionId: 's_someone_else' }], keys), 'seal log position 1 does not say what its row says (moved or reordered)');
});

test('verifySealLog: the log is continued across a key rotation', () => {
  const k1 = newKey();
  const k2 = newKey();
  const first = sealLog(k1, 2);
  const third = signSeal(k2, 'gw_test', 3, first[1].hash, sessionRow('s_log3'), { endedAt: 3, endReason: 'client terminated', eventCount: 2, head: sha256Hex('h') });
  const keys = new Map([[k1.keyId, k1.publicKeyPem], [k2.keyId, k2.publicKeyPem]]);
  assert.equal(verifySealLog([...first, third], keys), null);
  assert.equal(verifySealLog([...first, third], keys, new Set([k1.keyId])), `seal log position 3 is signed by key ${k2.keyId}, which is not a trusted key`);
});
