// Two recorders (two gateways) on one store, the first one's lease lapsed and its open sessions
// taken over and sealed by the second (issue 12 item 1). The first one does not know yet: what it
// then writes for those sessions is refused by the store and dropped, their waiters are refused,
// the engine is told to end them, and a seal it had queued for one of them is taken out of its
// seal log with the seals after it signed again, so both seal logs and every chain verify.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { Recorder, SessionTakenOverError, type SessionStartInfo } from '../../src/recorder/recorder.ts';
import { loadSigningKey } from '../../src/integrity/signing-keys.ts';
import { verifyStore } from '../../src/integrity/store-verifier.ts';

const info: SessionStartInfo = {
  protocol: 'postgres', identityId: 'id_1', identityName: 'agent', identityKind: 'agent', clientAddr: '127.0.0.1', applicationName: 'psql',
  connectionId: 'conn_1', connectionName: 'app', targetHost: '127.0.0.1', targetPort: 5432, targetDatabase: 'app', targetUser: 'app',
  recordingMode: 'durable', identityClaims: null, authMethod: 'token',
};

for (const writer of ['inline', 'thread'] as const) {
  test(`a recorder whose sessions were taken over drops their writes, ends them, and keeps its seal log unbroken (${writer} writer)`, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-takeover-'));
    const file = path.join(dir, 'gatehouse.db');
    const [storeA, storeB] = [new SqliteStore(file, { recordWriter: writer }), new SqliteStore(file, { recordWriter: writer })];
    // Heartbeats are run by hand here: the lease timers stay out of the way.
    const options = { leaseMs: 3_600_000, heartbeatMs: 1_200_000, checkpointIntervalMs: 3_600_000 };
    const a = new Recorder(storeA, pino({ level: 'silent' }), loadSigningKey(path.join(dir, 'a')), { ...options, gatewayId: 'gw_a' });
    const b = new Recorder(storeB, pino({ level: 'silent' }), loadSigningKey(path.join(dir, 'b')), { ...options, gatewayId: 'gw_b' });
    const ended: string[] = [];
    a.onTakenOver = (id, reason) => { ended.push(id); assert.match(reason, /taken over by gateway gw_b/); };
    try {
      await a.init();
      await b.init();
      const s0 = await a.startSession(info);
      await s0.end('client terminated'); // gw_a's seal log: position 1
      const [s1, s2, s3] = [await a.startSession(info), await a.startSession(info), await a.startSession(info)];
      for (const s of [s1, s2, s3]) await s.record('query', { text: 'select 1' });

      // gw_a's lease lapses (a stall, a partition); gw_b takes over its open sessions and seals them.
      storeB.db.prepare("UPDATE gateways SET heartbeat_at = 0 WHERE id = 'gw_a'").run();
      const taken = await storeB.takeOverSessions('gw_b', { leaseMs: options.leaseMs, own: false });
      assert.deepEqual(taken.map((t) => t.session.id).sort(), [s1.id, s2.id, s3.id].sort());
      await b.sealTakenOver(taken);
      const s4 = await a.startSession(info); // new sessions are gw_a's own

      // gw_a, unaware, ends s1 and s4 in one batch: s1's seal (position 2) is refused with it,
      // and s4's (position 3) is signed again at position 2.
      await Promise.all([s1.end('client terminated'), s4.end('client terminated')]);
      // s2 records a statement: refused (not sent), and the session is ended.
      await assert.rejects(s2.record('query', { text: 'drop table t' }), (err: unknown) => err instanceof SessionTakenOverError && /gw_b/.test(err.message));
      assert.ok(s2.isEnded);
      // s3 is idle: the heartbeat finds it owned elsewhere and ends it.
      assert.ok(!s3.isEnded);
      await a.heartbeat();
      assert.ok(s3.isEnded);
      await assert.rejects(s3.record('query', { text: 'select 2' }), /already ended/);
      assert.deepEqual(ended.sort(), [s2.id, s3.id].sort(), 'the engine is told to end the open ones');

      // Nothing gw_a wrote after the takeover reached those sessions' chains.
      for (const s of [s1, s2, s3]) {
        const events = await storeA.listEvents(s.id);
        assert.equal(events.at(-1)!.type, 'session.end');
        assert.match(JSON.parse(events.at(-1)!.data).reason, /^interrupted: gateway gw_a stopped renewing its lease before the session ended; sealed by gateway gw_b$/);
        assert.ok(!events.some((e) => /drop table/.test(e.data)));
        assert.equal((await storeA.getSeal(s.id))?.gatewayId, 'gw_b');
      }
      const sealsA = (await storeA.listSeals()).filter((x) => x.gatewayId === 'gw_a');
      assert.deepEqual(sealsA.map((x) => [x.position, x.sessionId]), [[1, s0.id], [2, s4.id]], 'gw_a\'s seal log has no hole');

      // A new session on gw_a continues the log at position 3.
      const s5 = await a.startSession(info);
      await s5.end('client terminated');
      await a.close();
      await b.close();
      assert.deepEqual((await storeA.listSeals()).filter((x) => x.gatewayId === 'gw_a').map((x) => x.position), [1, 2, 3]);
      const verified = await verifyStore(storeA);
      assert.deepEqual(verified.problems, []);
      assert.equal(verified.open, 0);
      assert.equal(verified.sealed, 6);
    } finally {
      await a.close().catch(() => {});
      await b.close().catch(() => {});
      await storeA.close();
      await storeB.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
