// The transport-neutral bookkeeping of a push: refusal reports and results.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { refusalReport, refusedPushResult } from '../../src/engines/git/push-guard.ts';

test('a refusal report carries the unpack status git prints as "remote unpack failed"', () => {
  const decided = [{ ref: 'refs/heads/main', old: 'a', new: 'b', class: 'unknown' as const, evidence: 'too large', allowed: false, reason: 'too large to verify' }];
  const report = refusalReport(['report-status'], decided, 'gatehouse refused a push of more than 10 bytes').toString();
  assert.equal(report, '003aunpack gatehouse refused a push of more than 10 bytes\n002bng refs/heads/main too large to verify\n0000');
  assert.match(refusalReport(['report-status'], decided).toString(), /^000eunpack ok\n/);
});

test('a refused push reports every ref as rejected with its reason', () => {
  const result = refusedPushResult([
    { ref: 'refs/heads/main', old: 'a', new: 'b', class: 'rewrite', evidence: 'pack', allowed: false, reason: 'protected ref: non-fast-forward update refused by gatehouse' },
  ], 123);
  assert.deepEqual(result, { refusedByGateway: true, packBytes: 123, refs: [{ ref: 'refs/heads/main', ok: false, reason: 'protected ref: non-fast-forward update refused by gatehouse' }] });
});
