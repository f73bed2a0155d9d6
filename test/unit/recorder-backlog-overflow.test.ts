// The recorder's backlog overflows while the store cannot write (issue 12 item 3): unwritten
// events of each session give way to one signed gap marker, written in front of everything later,
// so the chain that reaches the store never has a hole the record does not declare; memory stays
// bounded; durable statements are refused while the store fails; `verify` reports the session as
// incomplete (not tampered) and a forged, altered or removed gap marker as broken. The SQLite
// writer thread that dies is restarted, and one that keeps dying fails every write (closed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import pino from 'pino';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { Recorder, RecordingUnavailableError, type SessionStartInfo } from '../../src/recorder/recorder.ts';
import { loadSigningKey } from '../../src/integrity/signing-keys.ts';
import { verifyStore } from '../../src/integrity/store-verifier.ts';
import { verifySessionEvidence, type SessionEvidence } from '../../src/integrity/verify.ts';
import { GAP_EVENT_TYPE, gapPayloadOf, signGap } from '../../src/integrity/gap-marker.ts';
import type { RecordBatch, Store } from '../../src/store/types.ts';

const info = (recordingMode: 'durable' | 'best-effort'): SessionStartInfo => ({
  protocol: 'postgres', identityId: 'id_1', identityName: 'agent', identityKind: 'agent', clientAddr: '127.0.0.1', applicationName: 'psql',
  connectionId: 'conn_1', connectionName: 'app', targetHost: '127.0.0.1', targetPort: 5432, targetDatabase: 'app', targetUser: 'app',
  recordingMode, identityClaims: null, authMethod: 'token',
});

/** A real SQLite store whose batch writes fail while `down` is set (its disk "full"). */
function faultyStore(store: SqliteStore): { store: Store; setDown(v: boolean): void; failedWrites: () => number } {
  let down = false;
  let failed = 0;
  const proxy = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'writeBatch') {
        return (batch: RecordBatch) => {
          if (down) { failed++; return Promise.reject(new Error('SQLITE_FULL: database or disk is full')); }
          return target.writeBatch(batch);
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { store: proxy as Store, setDown: (v) => { down = v; }, failedWrites: () => failed };
}

const tick = () => new Promise((r) => setImmediate(r));

test('an overflowing backlog becomes signed gap markers: bounded memory, durable refused, the store gets no undeclared hole, verify says incomplete', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-overflow-'));
  const sqlite = new SqliteStore(path.join(dir, 'gatehouse.db'));
  const faulty = faultyStore(sqlite);
  const key = loadSigningKey(path.join(dir, 'keys'));
  const rec = new Recorder(faulty.store, pino({ level: 'silent' }), key, { gatewayId: 'gw_1', maxRetainedEvents: 50, checkpointIntervalMs: 3_600_000 });
  try {
    await rec.init();
    const bulk = await rec.startSession(info('best-effort'));
    const durable = await rec.startSession(info('durable'));
    const quiet = await rec.startSession(info('best-effort'));
    bulk.append('query', { text: 'select 0' });
    await rec.flush();

    faulty.setDown(true);
    // The best-effort session goes on while nothing can be written: 400 statements, far past the budget.
    for (let i = 1; i <= 400; i++) {
      bulk.append('query', { text: `insert into t values (${i})` });
      if (i % 25 === 0) { rec.checkpoint(); await rec.flush(); await tick(); }
    }
    // A durable statement is refused (not forwarded) while the store fails.
    await assert.rejects(durable.record('query', { text: 'delete from accounts' }), RecordingUnavailableError);
    await rec.flush();
    assert.ok(faulty.failedWrites() >= 10, `writes were attempted and failed: ${faulty.failedWrites()}`);
    assert.ok(rec.stats.droppedEvents >= 300, `events gave way to gap markers: ${rec.stats.droppedEvents}`);
    assert.ok(rec.stats.failing);
    // Memory: what is kept is bounded by the budget plus two rows per session, not by the traffic.
    const queued = (rec as unknown as { batch: RecordBatch }).batch.events.length;
    assert.ok(queued <= 50 + 2 * 3, `queued events stay bounded: ${queued}`);

    faulty.setDown(false);
    bulk.append('query', { text: 'select 401' });
    await durable.record('query', { text: 'select 1' }); // the store works: durable traffic goes on
    assert.equal(rec.stats.failing, false);
    await bulk.end('client terminated');
    await durable.end('client terminated');
    await quiet.end('client terminated');
    await rec.close();

    // In the store: each position once, the lost run as one gap row linking the chain.
    const events = await sqlite.listEvents(bulk.id);
    const gaps = events.filter((e) => e.type === GAP_EVENT_TYPE);
    assert.equal(gaps.length, 1, 'one gap marker for the one lost run');
    const gap = gapPayloadOf(gaps[0]!);
    assert.ok(gap.fromSeq >= 2 && gap.toSeq > gap.fromSeq, JSON.stringify(gap));
    assert.match(gap.reason, /could not write \(SQLITE_FULL: database or disk is full\)/);
    assert.equal(gap.keyId, key.keyId);
    const texts = events.filter((e) => e.type === 'query').map((e) => (JSON.parse(e.data) as { text: string }).text);
    assert.equal(texts[0], 'select 0');
    assert.equal(texts.at(-1), 'select 401', 'events after the gap are recorded whole');

    const verdict = await verifyStore(sqlite);
    const bulkProblem = verdict.problems.find((p) => p.includes(bulk.id));
    assert.ok(bulkProblem, JSON.stringify(verdict.problems));
    assert.match(bulkProblem, new RegExp(`incomplete: events ${gap.fromSeq}–${gap.toSeq} \\(${gap.toSeq - gap.fromSeq + 1}\\) were lost by the gateway, which signed a gap marker`));
    assert.equal(verdict.problems.length, 1, `only the session with the gap fails: ${JSON.stringify(verdict.problems)}`);

    // The durable session lost nothing: its refused statement is on record too.
    const durableTexts = (await sqlite.listEvents(durable.id)).filter((e) => e.type === 'query').map((e) => (JSON.parse(e.data) as { text: string }).text);
    assert.deepEqual(durableTexts, ['delete from accounts', 'select 1']);

    // The gap marker cannot be forged, altered or removed without verify saying so.
    const evidence = async (rows = events): Promise<SessionEvidence> => ({
      sessionId: bulk.id, events: rows, checkpoints: await sqlite.listCheckpoints(bulk.id), seal: (await sqlite.getSeal(bulk.id)) ?? null,
      keys: new Map([[key.keyId, key.publicKeyPem]]),
    });
    const honest = verifySessionEvidence(await evidence());
    assert.equal(honest.ok, false);
    assert.equal(honest.incomplete, true);
    assert.deepEqual(honest.gaps?.map((g) => [g.fromSeq, g.toSeq]), [[gap.fromSeq, gap.toSeq]]);
    const at = events.indexOf(gaps[0]!);
    const removed = verifySessionEvidence(await evidence(events.filter((e) => e !== gaps[0])));
    assert.match(String(removed.problem), new RegExp(`event ${gap.fromSeq} is missing`));
    assert.notEqual(removed.incomplete, true);
    const widened = { ...gaps[0]!, data: JSON.stringify({ ...JSON.parse(gaps[0]!.data), payload: JSON.stringify({ ...gap, toSeq: gap.toSeq + 1 }) }) };
    assert.match(String(verifySessionEvidence(await evidence(events.map((e, i) => (i === at ? widened : e)))).problem), /gap marker at event \d+: the signature is invalid/);
    const other = loadSigningKey(path.join(dir, 'other-keys'));
    const forged = signGap(other, { ...gap });
    const forgedResult = verifySessionEvidence(await evidence(events.map((e, i) => (i === at ? forged : e))));
    assert.match(String(forgedResult.problem), /gap marker at event \d+ is signed by key \w+, which is not in the bundle/);
    // Even a validly signed marker must begin where the chain it sits in has reached.
    const misplaced = signGap(key, { ...gap, prevHash: '0'.repeat(64) });
    assert.match(String(verifySessionEvidence(await evidence(events.map((e, i) => (i === at ? misplaced : e)))).problem), /does not follow the chain/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a dead recording writer thread is restarted; one that keeps dying fails every write, loudly', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-writer-death-'));
  const store = new SqliteStore(path.join(dir, 'gatehouse.db'), { recordWriter: 'thread' });
  const key = loadSigningKey(path.join(dir, 'keys'));
  const rec = new Recorder(store, pino({ level: 'silent' }), key, { gatewayId: 'gw_1', checkpointIntervalMs: 3_600_000 });
  const worker = () => (store as unknown as { writer: { worker: Worker; deaths: number } }).writer;
  try {
    await rec.init();
    const s = await rec.startSession(info('durable'));
    await s.record('query', { text: 'select 1' });

    // The thread dies: the write it held fails (the recorder keeps it), the next one works again.
    const pending = s.record('query', { text: 'select 2' });
    await worker().worker.terminate();
    await assert.rejects(pending, /writer thread exited \(1\); restarted/);
    await s.record('query', { text: 'select 3' });
    assert.equal(worker().deaths, 1);

    // Dying again and again: after the restart budget, writes fail until the gateway restarts.
    for (let i = 0; i < 5; i++) {
      await worker().worker.terminate();
      await new Promise((r) => setTimeout(r, 20));
    }
    await assert.rejects(s.record('query', { text: 'select 4' }), /died 6 times within a minute and is not restarted/);
    assert.equal(worker().deaths, 6);
    assert.ok(rec.stats.failing);

    // Nothing written before is lost, and what was kept was written while the thread still ran.
    const texts = (await store.listEvents(s.id)).filter((e) => e.type === 'query').map((e) => (JSON.parse(e.data) as { text: string }).text);
    assert.deepEqual(texts, ['select 1', 'select 2', 'select 3']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
