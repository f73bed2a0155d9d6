// Record before forward follows the session's recording mode: a durable session's event is
// committed to the (real, SQLite) store before the caller goes on; a best-effort one is appended
// and the caller is not held.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { Recorder, type SessionStartInfo } from '../../src/recorder/recorder.ts';
import { loadSigningKey } from '../../src/integrity/signing-keys.ts';

const info = (recordingMode: 'durable' | 'best-effort'): SessionStartInfo => ({
  protocol: 'ssh', identityId: 'id_1', identityName: 'alice', identityKind: 'human', clientAddr: '127.0.0.1', applicationName: 'test',
  connectionId: 'conn_1', connectionName: 'box', targetHost: '127.0.0.1', targetPort: 22, targetDatabase: '', targetUser: 'root',
  recordingMode, identityClaims: null, authMethod: 'publickey',
});

test('beforeForward: durable waits for the commit, best-effort does not hold the caller', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-before-forward-'));
  const store = new SqliteStore(path.join(dir, 'gatehouse.db'));
  const recorder = new Recorder(store, pino({ level: 'silent' }), loadSigningKey(path.join(dir, 'signing')));
  try {
    await recorder.init();
    const durable = await recorder.startSession(info('durable'));
    const pending = durable.beforeForward('ssh.exec', { command: 'rm -rf /tmp/x' });
    assert.ok(pending instanceof Promise, 'a durable session hands back something to wait for');
    await pending;
    assert.ok((await store.listEvents(durable.id)).some((e) => e.type === 'ssh.exec'), 'committed once the promise settles');

    const bestEffort = await recorder.startSession(info('best-effort'));
    assert.equal(bestEffort.beforeForward('ssh.exec', { command: 'ls' }), undefined);
    await recorder.flush();
    assert.ok((await store.listEvents(bestEffort.id)).some((e) => e.type === 'ssh.exec'), 'still recorded, with the next commit');
  } finally {
    await recorder.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
