// An event that arrives after its session ended (a channel closing late, an outcome after the
// seal) must not throw inside whatever emitted it — that used to take the gateway down from an
// EventEmitter listener. It is not recorded (the chain is sealed); a caller that waits to
// forward is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import pino from 'pino';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { Recorder, type SessionStartInfo } from '../../src/recorder/recorder.ts';
import { loadSigningKey } from '../../src/integrity/signing-keys.ts';

const info: SessionStartInfo = {
  protocol: 'ssh', identityId: 'id_1', identityName: 'alice', identityKind: 'human', clientAddr: '127.0.0.1', applicationName: 'test',
  connectionId: 'conn_1', connectionName: 'box', targetHost: '127.0.0.1', targetPort: 22, targetDatabase: '', targetUser: 'root',
  recordingMode: 'durable', identityClaims: null, authMethod: 'publickey',
};

test('events after the end: no throw from a listener, nothing recorded, record-before-forward refused', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-late-'));
  const store = new SqliteStore(path.join(dir, 'gatehouse.db'));
  const recorder = new Recorder(store, pino({ level: 'silent' }), loadSigningKey(path.join(dir, 'signing')));
  try {
    await recorder.init();
    const session = await recorder.startSession(info);
    session.append('ssh.exec', { command: 'true' });
    await session.end('client disconnected');
    const count = (await store.listEvents(session.id)).length;

    const channel = new EventEmitter();
    channel.on('close', () => session.append('agent.close', { bytes: 10 }));
    assert.doesNotThrow(() => channel.emit('close'));
    assert.equal(session.append('result', { ref: 1 }), -1);
    await assert.rejects(session.record('ssh.exec', { command: 'rm -rf /' }), /already ended/);
    assert.equal(session.beforeForward('ssh.exec', { command: 'id' }) instanceof Promise, true);
    await assert.rejects(session.beforeForward('ssh.exec', { command: 'id' })!, /already ended/);
    await recorder.flush();
    assert.equal((await store.listEvents(session.id)).length, count, 'the sealed chain is unchanged');
  } finally {
    await recorder.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
