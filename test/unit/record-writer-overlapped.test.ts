// The overlapped recording writer (recording.writer: overlapped): a batch is
// committed at once on the event loop without a sync, and released only by an fdatasync of the
// -wal file that started after its commit; one fdatasync at a time; a failed one fails every
// later write (fail closed), since retrying an fdatasync may report success for lost pages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { OverlappedRecordWriter, type SyncFn } from '../../src/store/sqlite/record-writer-overlapped.ts';
import type { RecordBatch, SessionRow } from '../../src/store/types.ts';

function session(id: string): SessionRow {
  return {
    id, protocol: 'postgres', identityId: 'id_1', identityName: 'agent', identityKind: 'agent', clientAddr: '127.0.0.1:1', applicationName: 'test',
    connectionId: 'conn_1', connectionName: 'db', targetHost: '127.0.0.1', targetPort: 5432, targetDatabase: 'app', targetUser: 'app',
    startedAt: 1_000_000, endedAt: null, endReason: null, eventCount: 0, recordingMode: 'durable',
  };
}

function batch(sessionId: string, seq: number, started = false): RecordBatch {
  return {
    gatewayId: '', sessionsStarted: started ? [session(sessionId)] : [], sessionsEnded: [], checkpoints: [], seals: [],
    events: [{ sessionId, seq, ts: 1_000_000 + seq, type: 'query', data: JSON.stringify({ text: `select ${seq}` }), hash: String(seq).padStart(64, '0') }],
  };
}

/** A store on a temp dir (its schema in place), and an overlapped writer on its file with a controllable sync. */
function setup(): { dir: string; file: string; writer: OverlappedRecordWriter; syncs: Array<{ fd: number; done: (err: NodeJS.ErrnoException | null) => void }>; close: () => Promise<void> } {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-overlapped-'));
  const file = path.join(dir, 'gatehouse.db');
  const store = new SqliteStore(file, { recordWriter: 'inline' }); // migrations; keeps a connection open, as the gateway does
  const syncs: Array<{ fd: number; done: (err: NodeJS.ErrnoException | null) => void }> = [];
  const sync: SyncFn = (fd, done) => { syncs.push({ fd, done }); };
  const writer = new OverlappedRecordWriter(file, true, sync);
  return {
    dir, file, writer, syncs,
    close: async () => { await store.close(); rmSync(dir, { recursive: true, force: true }); },
  };
}

function settled(p: Promise<void>): () => 'pending' | 'resolved' | 'rejected' {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending';
  p.then(() => { state = 'resolved'; }, () => { state = 'rejected'; });
  return () => state;
}

const tick = () => new Promise<void>((r) => setImmediate(r));

test('a batch is committed at once and released only by an fdatasync of the -wal file that started after its commit; one fdatasync at a time', async () => {
  const t = setup();
  try {
    const a = settled(t.writer.write(batch('s_1', 0, true)));
    // Committed already: another connection reads it before any sync.
    const reader = new DatabaseSync(t.file, { readOnly: true });
    assert.equal((reader.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n, 1);
    assert.equal(t.syncs.length, 1, 'the first batch starts an fdatasync');
    assert.equal(statSync(`${t.file}-wal`).ino, (await import('node:fs')).fstatSync(t.syncs[0]!.fd).ino, 'it syncs the -wal file');
    const b = settled(t.writer.write(batch('s_1', 1)));
    const c = settled(t.writer.write(batch('s_1', 2)));
    assert.equal((reader.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n, 3);
    reader.close();
    await tick();
    assert.equal(t.syncs.length, 1, 'no second fdatasync while one is in flight');
    assert.deepEqual([a(), b(), c()], ['pending', 'pending', 'pending'], 'nothing is released before its sync completes');
    t.syncs[0]!.done(null);
    await tick();
    assert.equal(a(), 'resolved', 'the batch committed before the sync started is durable');
    assert.deepEqual([b(), c()], ['pending', 'pending'], 'batches committed while it ran wait for the next sync');
    assert.equal(t.syncs.length, 2, 'the next fdatasync starts as soon as the first ends');
    t.syncs[1]!.done(null);
    await tick();
    assert.deepEqual([b(), c()], ['resolved', 'resolved'], 'one fdatasync releases every batch committed before it started');
    assert.deepEqual(t.writer.stats, { syncs: 2, batches: 3 });
    await t.writer.close();
  } finally {
    await t.close();
  }
});

test('a failed fdatasync fails its batches, those waiting behind it, and every later write (fail closed until restart)', async () => {
  const t = setup();
  try {
    const a = t.writer.write(batch('s_2', 0, true));
    const b = t.writer.write(batch('s_2', 1));
    const eio = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    t.syncs[0]!.done(eio);
    await assert.rejects(a, /fdatasync of the recording WAL failed \(EIO\); recording fails until the gateway restarts/);
    await assert.rejects(b, /fdatasync of the recording WAL failed/);
    await assert.rejects(t.writer.write(batch('s_2', 2)), /fdatasync of the recording WAL failed/);
    assert.equal(t.syncs.length, 1, 'never synced again after a failure');
    await t.writer.close();
  } finally {
    await t.close();
  }
});

test('a batch that cannot be committed is refused at once, without a sync', async () => {
  const t = setup();
  try {
    const first = t.writer.write(batch('s_3', 0, true));
    t.syncs[0]!.done(null);
    await first;
    // The same seq with other data: the writer refuses what would overwrite a recorded event.
    const clash = batch('s_3', 0);
    clash.events[0]!.data = '{"text":"something else"}';
    await assert.rejects(t.writer.write(clash), /the store holds a different event #0 of session s_3/);
    assert.equal(t.syncs.length, 1);
    await t.writer.close();
  } finally {
    await t.close();
  }
});

test('the store records with the overlapped writer, with a real fdatasync', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-overlapped-'));
  try {
    const store = new SqliteStore(path.join(dir, 'gatehouse.db'), { recordWriter: 'overlapped' });
    await store.writeBatch(batch('s_4', 0, true));
    await Promise.all([store.writeBatch(batch('s_4', 1)), store.writeBatch(batch('s_4', 2))]);
    assert.deepEqual((await store.listEvents('s_4')).map((e) => e.seq), [0, 1, 2]);
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
