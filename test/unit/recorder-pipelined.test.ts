// The recorder with a store that takes two batches at once (the journal writer): the next batch is
// written while the last is still being made durable, waiters are released strictly in order
// (a later batch that lands first waits for the earlier one), and when a write fails, that batch
// and the one in flight behind it are taken back, in order, and written again once the store works.
// The store is a real SQLite store; only the timing and failure of its writes are held in hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { Recorder, type SessionStartInfo } from '../../src/recorder/recorder.ts';
import { loadSigningKey } from '../../src/integrity/signing-keys.ts';
import type { RecordBatch, Store } from '../../src/store/types.ts';

const info: SessionStartInfo = {
  protocol: 'postgres', identityId: 'id_1', identityName: 'agent', identityKind: 'agent', clientAddr: '127.0.0.1', applicationName: 'test',
  connectionId: 'conn_1', connectionName: 'db', targetHost: '127.0.0.1', targetPort: 5432, targetDatabase: 'app', targetUser: 'app',
  recordingMode: 'durable', identityClaims: null, authMethod: 'password',
};

interface HeldWrite { batch: RecordBatch; release: () => void; fail: (err: Error) => void }

/** A real store whose writes wait until the test releases or fails them; it reports a depth of 2. */
function heldStore(real: SqliteStore): { store: Store; held: HeldWrite[]; hold: boolean } {
  const control = { store: null as unknown as Store, held: [] as HeldWrite[], hold: false };
  control.store = new Proxy(real, {
    get(target, prop, receiver) {
      if (prop === 'writeDepth') return 2;
      if (prop === 'writeBatch') {
        return (batch: RecordBatch): Promise<void> => {
          if (!control.hold) return target.writeBatch(batch);
          return new Promise<void>((resolve, reject) => {
            control.held.push({ batch, release: () => { target.writeBatch(batch).then(resolve, reject); }, fail: reject });
          });
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  }) as unknown as Store;
  return control;
}

const until = async (what: () => boolean, ms = 2000): Promise<void> => {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

test('two batches in flight: the second is written before the first is durable, and released after it', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-pipelined-'));
  const real = new SqliteStore(path.join(dir, 'gatehouse.db'), { recordWriter: 'inline' });
  const control = heldStore(real);
  const recorder = new Recorder(control.store, pino({ level: 'silent' }), loadSigningKey(path.join(dir, 'signing')));
  try {
    await recorder.init();
    const a = await recorder.startSession(info);
    const b = await recorder.startSession(info);
    control.hold = true;
    const released: string[] = [];
    const first = a.record('query', { text: 'select 1' }).then(() => released.push('a'));
    await until(() => control.held.length === 1);
    const second = b.record('query', { text: 'select 2' }).then(() => released.push('b'));
    await until(() => control.held.length === 2); // written while the first is still in flight
    control.held[1].release(); // the later one lands first
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(released, [], 'the second batch is not released ahead of the first');
    control.held[0].release();
    await Promise.all([first, second]);
    assert.deepEqual(released, ['a', 'b']);
    control.hold = false;
  } finally {
    control.hold = false;
    await recorder.close();
    await real.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a failed write takes back the batch in flight behind it: both waiters are refused, and both batches are written again in order', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-pipelined-'));
  const real = new SqliteStore(path.join(dir, 'gatehouse.db'), { recordWriter: 'inline' });
  const control = heldStore(real);
  const recorder = new Recorder(control.store, pino({ level: 'silent' }), loadSigningKey(path.join(dir, 'signing')));
  try {
    await recorder.init();
    const s = await recorder.startSession(info);
    control.hold = true;
    const first = s.record('query', { text: 'select 1' });
    await until(() => control.held.length === 1);
    const second = s.record('query', { text: 'select 2' });
    await until(() => control.held.length === 2);
    // The store fails the first and, as its contract says, every one given after it.
    control.held[0].fail(new Error('disk on fire'));
    control.held[1].fail(new Error('an earlier recording batch failed'));
    await assert.rejects(first, /disk on fire/);
    await assert.rejects(second, /disk on fire/);
    // The store works again: the retry writes what was taken back, in order, with what came since.
    control.hold = false;
    await s.record('query', { text: 'select 3' });
    const texts = (await real.listEvents(s.id)).filter((e) => e.type === 'query').map((e) => (JSON.parse(e.data) as { text: string }).text);
    assert.deepEqual(texts, ['select 1', 'select 2', 'select 3']);
  } finally {
    control.hold = false;
    await recorder.close();
    await real.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
