// The transport-neutral bookkeeping of a push: the bounded pack copy both transports keep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PackCopy, refusedPushResult } from '../../src/engines/git/push-guard.ts';

test('a pack copy keeps bytes up to its limit, then only counts them and says why', () => {
  const copy = new PackCopy(10);
  const chunk = Buffer.from('abcdef');
  copy.add(chunk);
  chunk.fill(0); // the transport reuses its buffer: the copy must not change
  assert.deepEqual(copy.pack(), Buffer.from('abcdef'));
  assert.equal(copy.problem, undefined);
  copy.add(Buffer.from('ghijkl'));
  assert.equal(copy.bytes, 12);
  assert.equal(copy.pack(), null);
  assert.match(copy.problem!, /larger than 10 bytes/);
});

test('a raised limit keeps a larger pack; countOnly drops what was kept', () => {
  const copy = new PackCopy(4);
  copy.limit = 100;
  copy.add(Buffer.alloc(50, 1));
  assert.equal(copy.pack()?.length, 50);
  copy.countOnly();
  copy.add(Buffer.alloc(5));
  assert.equal(copy.bytes, 55);
  assert.equal(copy.pack(), null);
});

test('a refused push reports every ref as rejected with its reason', () => {
  const result = refusedPushResult([
    { ref: 'refs/heads/main', old: 'a', new: 'b', class: 'rewrite', evidence: 'pack', allowed: false, reason: 'protected ref: non-fast-forward update refused by gatehouse' },
  ], 123);
  assert.deepEqual(result, { refusedByGateway: true, packBytes: 123, refs: [{ ref: 'refs/heads/main', ok: false, reason: 'protected ref: non-fast-forward update refused by gatehouse' }] });
});
