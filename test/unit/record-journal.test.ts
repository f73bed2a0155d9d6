// The journal recording writer (recording.writer: journal): a batch is durable once its record is
// in the journal; its rows reach SQLite behind it. A gateway killed before they did loses nothing
// (the next open replays the journal); a torn tail is ignored; a rotation makes everything older
// stale, so sessions removed after it are not brought back; a full journal rotates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DatabaseSync } from 'node:sqlite';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import type { RecordBatch, SessionRow } from '../../src/store/types.ts';
import { run } from '../support/processes.ts';

const STORE_MODULE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/store/sqlite/sqlite-store.ts');

function session(id: string): SessionRow {
  return {
    id, protocol: 'postgres', identityId: 'id_1', identityName: 'agent', identityKind: 'agent', clientAddr: '127.0.0.1:1', applicationName: 'test',
    connectionId: 'conn_1', connectionName: 'db', targetHost: '127.0.0.1', targetPort: 5432, targetDatabase: 'app', targetUser: 'app',
    startedAt: 1_000_000, endedAt: null, endReason: null, eventCount: 0, recordingMode: 'durable',
  };
}

function batch(sessionId: string, seq: number, started = false, text = `select ${seq}`): RecordBatch {
  return {
    gatewayId: 'gw', sessionsStarted: started ? [session(sessionId)] : [], sessionsEnded: [], checkpoints: [], seals: [],
    events: [{ sessionId, seq, ts: 1_000_000 + seq, type: 'query', data: JSON.stringify({ text }), hash: String(seq).padStart(64, '0') }],
  };
}

function tempStore(): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-journal-'));
  return { dir, file: path.join(dir, 'gatehouse.db') };
}

/** Events of a session straight from the SQLite file, without any writer (what is there, not what a replay would add). */
function eventsInFile(file: string, sessionId: string): number[] {
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    return (db.prepare('SELECT seq FROM events WHERE session_id = ? ORDER BY seq').all(sessionId) as Array<{ seq: number }>).map((r) => Number(r.seq));
  } finally {
    db.close();
  }
}

/** A gateway process that writes `count` one-event batches and is SIGKILLed right after the last is durable. */
async function writeThenKill(file: string, count: number): Promise<void> {
  const script = `
    import { SqliteStore } from ${JSON.stringify(STORE_MODULE)};
    const store = new SqliteStore(${JSON.stringify(file)}, { recordWriter: 'journal' });
    const b = (seq, started) => ({ gatewayId: 'gw', sessionsStarted: started ? [${JSON.stringify(session('s1'))}] : [], sessionsEnded: [], checkpoints: [], seals: [],
      events: [{ sessionId: 's1', seq, ts: 1000000 + seq, type: 'query', data: JSON.stringify({ text: 'select ' + seq }), hash: String(seq).padStart(64, '0') }] });
    for (let i = 0; i < ${count}; i++) await store.writeBatch(b(i, i === 0));
    process.kill(process.pid, 'SIGKILL');`;
  const r = await run(process.execPath, ['--input-type=module', '-e', script], {});
  assert.equal(r.signal ?? null, 'SIGKILL', `the writer was killed (${r.code} ${r.stderr})`);
}

test('batches released before their rows reached SQLite are replayed at the next open, in order, once', async () => {
  const { dir, file } = tempStore();
  try {
    await new SqliteStore(file, { recordWriter: 'inline' }).close(); // the schema
    await writeThenKill(file, 40);
    // Killed within the journal's apply delay: the released batches are not all in SQLite.
    assert.ok(eventsInFile(file, 's1').length < 40, `SQLite already had ${eventsInFile(file, 's1').length} of 40 events: the test proves nothing`);
    const store = new SqliteStore(file, { recordWriter: 'journal' });
    assert.deepEqual((await store.listEvents('s1')).map((e) => e.seq), Array.from({ length: 40 }, (_, i) => i));
    await store.close();
    // Opening again replays nothing new and changes nothing.
    const again = new SqliteStore(file, { recordWriter: 'journal' });
    assert.equal((await again.listEvents('s1')).length, 40);
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a torn record at the end of the journal is ignored; the records before it are replayed', async () => {
  const { dir, file } = tempStore();
  try {
    await new SqliteStore(file, { recordWriter: 'inline' }).close();
    await writeThenKill(file, 5);
    const journal = `${file}-recjournal`;
    assert.ok(statSync(journal).size >= 64 * 1024, 'the journal is preallocated');
    // Where the next record would have gone: the header of record 6 of the same generation, whose
    // payload was only partly written when the power went (its CRC cannot match).
    const bytes = readFileSync(journal);
    let at = 0;
    let last = 0;
    while (bytes.readUInt32LE(at) === 0x4a524847 && (at === 0 || bytes.readUInt32LE(at + 12) === last + 1)) {
      last = bytes.readUInt32LE(at + 12);
      at += 20 + bytes.readUInt32LE(at + 4);
    }
    assert.equal(last, 5, 'five records after the marker');
    const torn = Buffer.alloc(60);
    torn.writeUInt32LE(0x4a524847, 0);
    torn.writeUInt32LE(400, 4);
    torn.writeUInt32LE(bytes.readUInt32LE(8), 8);
    torn.writeUInt32LE(6, 12);
    torn.write('{"gatewayId":"gw","events":[{"sessionId":"s1","seq":5', 20);
    const fd = openSync(journal, 'r+');
    writeSync(fd, torn, 0, torn.length, at);
    closeSync(fd);
    const store = new SqliteStore(file, { recordWriter: 'journal' });
    assert.deepEqual((await store.listEvents('s1')).map((e) => e.seq), [0, 1, 2, 3, 4]);
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sessions deleted after their batches were journaled are not brought back by a replay', async () => {
  const { dir, file } = tempStore();
  try {
    const store = new SqliteStore(file, { recordWriter: 'journal' });
    await store.writeBatch(batch('gone', 0, true));
    await store.writeBatch({ ...batch('gone', 1), sessionsEnded: [{ sessionId: 'gone', endedAt: 2_000_000, endReason: 'done', eventCount: 2 }] });
    await store.deleteSessions(['gone']);
    assert.equal((await store.listEvents('gone')).length, 0);
    // No close: the next open finds the journal as a crash would leave it.
    const after = new SqliteStore(file, { recordWriter: 'journal' });
    assert.equal((await after.listEvents('gone')).length, 0, 'the removed session stays removed');
    await after.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a full journal rotates: every row is in SQLite and the journal keeps its size', async () => {
  const { dir, file } = tempStore();
  try {
    const store = new SqliteStore(file, { recordWriter: 'journal', journalBytes: 64 * 1024 });
    const filler = 'x'.repeat(3000);
    for (let i = 0; i < 200; i++) await store.writeBatch(batch('big', i, i === 0, filler)); // ~600 KiB through a 64 KiB journal
    assert.equal(statSync(`${file}-recjournal`).size, 64 * 1024);
    assert.equal((await store.listEvents('big')).length, 200);
    // A batch larger than the whole journal is written to SQLite directly, durably.
    await store.writeBatch(batch('big', 200, false, 'y'.repeat(100 * 1024)));
    assert.equal((await store.listEvents('big')).length, 201);
    await store.close();
    assert.equal(eventsInFile(file, 'big').length, 201);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a row that differs from what SQLite holds is refused at replay, not overwritten', async () => {
  const { dir, file } = tempStore();
  try {
    await new SqliteStore(file, { recordWriter: 'inline' }).close();
    await writeThenKill(file, 3);
    // Someone writes a different event #1 into SQLite before the gateway starts again.
    const inline = new SqliteStore(file, { recordWriter: 'inline' });
    await inline.writeBatch({ ...batch('s1', 0, true), events: [] }).catch(() => undefined);
    const db = new DatabaseSync(file);
    db.prepare("INSERT OR REPLACE INTO events (session_id, seq, ts, type, data, hash) VALUES ('s1', 1, 1, 'query', '{\"text\":\"forged\"}', 'f')").run();
    db.close();
    await inline.close();
    assert.throws(() => new SqliteStore(file, { recordWriter: 'journal' }), /different event #1/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a second gateway on the same data directory is refused the journal while the first runs', async () => {
  const { dir, file } = tempStore();
  const { spawn } = await import('node:child_process');
  const holder = spawn(process.execPath, ['--input-type=module', '-e', `
    import { SqliteStore } from ${JSON.stringify(STORE_MODULE)};
    new SqliteStore(${JSON.stringify(file)}, { recordWriter: 'journal' });
    console.log('open');
    setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('open')) resolve(); });
      holder.once('exit', (code) => reject(new Error(`holder exited ${code}`)));
    });
    assert.throws(() => new SqliteStore(file, { recordWriter: 'journal' }), new RegExp(`in use by process ${holder.pid}`));
    holder.kill('SIGKILL');
    await new Promise((resolve) => holder.once('exit', resolve));
    // Its process gone, the lock is stale and taken over.
    const store = new SqliteStore(file, { recordWriter: 'journal' });
    await store.close();
  } finally {
    holder.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a rotation asked for while a journal write is in flight waits for it: the released batch survives a crash', async () => {
  const { dir, file } = tempStore();
  try {
    await new SqliteStore(file, { recordWriter: 'inline' }).close();
    const script = `
      import { SqliteStore } from ${JSON.stringify(STORE_MODULE)};
      const store = new SqliteStore(${JSON.stringify(file)}, { recordWriter: 'journal' });
      const b = (seq, started) => ({ gatewayId: 'gw', sessionsStarted: started ? [${JSON.stringify(session('s1'))}] : [], sessionsEnded: [], checkpoints: [], seals: [],
        events: [{ sessionId: 's1', seq, ts: 1000000 + seq, type: 'query', data: '{}', hash: String(seq).padStart(64, '0') }] });
      await store.writeBatch(b(0, true));
      for (let i = 1; i <= 20; i++) {
        const written = store.writeBatch(b(i, false));
        await Promise.all([written, store.deleteSessions(['nobody'])]); // retention runs while a batch is being journaled
      }
      process.kill(process.pid, 'SIGKILL');`;
    const r = await run(process.execPath, ['--input-type=module', '-e', script], {});
    assert.equal(r.signal, 'SIGKILL', r.stderr);
    const store = new SqliteStore(file, { recordWriter: 'journal' });
    assert.deepEqual((await store.listEvents('s1')).map((e) => e.seq), Array.from({ length: 21 }, (_, i) => i));
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('rows SQLite will not take: no crash from the apply behind the journal, and writes are refused once it has lasted', { timeout: 30_000 }, async () => {
  const { dir, file } = tempStore();
  try {
    const store = new SqliteStore(file, { recordWriter: 'journal' });
    await store.writeBatch(batch('x', 0, true));
    await store.listEvents('x'); // applied
    // Another gateway owns the session now: its rows are refused when applied.
    const db = new DatabaseSync(file);
    db.prepare("UPDATE sessions SET gateway_id = 'other' WHERE id = 'x'").run();
    db.close();
    await store.writeBatch(batch('x', 1)); // durable in the journal; applied behind it, and refused there
    await new Promise((r) => setTimeout(r, 5500));
    await assert.rejects(store.writeBatch(batch('y', 0, true)), /has not taken the recording journal's rows for \d+ s/);
    assert.equal(process.exitCode ?? 0, 0);
    await store.close().catch(() => undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
