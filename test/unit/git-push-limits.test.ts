// The guarded-push limits: the `git:` section of gatehouse.yaml and its environment variables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { applyPushLimits, defaultPushLimits, parseByteSize, DEFAULT_MAX_PUSH_BYTES } from '../../src/engines/git/push-limits.ts';

test('sizes in bytes or binary units; nonsense refused with the setting named', () => {
  assert.equal(parseByteSize('2147483648', 'x'), 2 ** 31);
  assert.equal(parseByteSize('512MiB', 'x'), 512 * 1024 ** 2);
  assert.equal(parseByteSize('2G', 'x'), 2 * 1024 ** 3);
  assert.equal(parseByteSize(' 64 kb ', 'x'), 64 * 1024);
  assert.equal(parseByteSize(1.5 * 1024, 'x'), 1536);
  for (const bad of ['', '0', '-1', 'lots', '2PB', '1e3']) {
    assert.throws(() => parseByteSize(bad, 'git.max_push_bytes'), /config: git.max_push_bytes must be a positive size in bytes/, bad);
  }
});

test('defaults, then the file, then the environment', () => {
  const limits = defaultPushLimits('/data', {});
  assert.deepEqual(limits, { maxPushBytes: DEFAULT_MAX_PUSH_BYTES, spoolDir: '/data/spool' });
  applyPushLimits(limits, { max_push_bytes: '1GiB', spool_dir: 'spool-here' }, {}, '/etc/gatehouse');
  assert.deepEqual(limits, { maxPushBytes: 1024 ** 3, spoolDir: '/etc/gatehouse/spool-here' });
  applyPushLimits(limits, { max_push_bytes: '1GiB' }, { GATEHOUSE_GIT_MAX_PUSH_BYTES: '16MiB', GATEHOUSE_GIT_SPOOL_DIR: '/var/spool/gh' });
  assert.deepEqual(limits, { maxPushBytes: 16 * 1024 ** 2, spoolDir: path.resolve('/var/spool/gh') });
  assert.equal(defaultPushLimits(undefined, { GATEHOUSE_GIT_MAX_PUSH_BYTES: '8MiB' }).maxPushBytes, 8 * 1024 ** 2);
  assert.throws(() => applyPushLimits(limits, undefined, { GATEHOUSE_GIT_MAX_PUSH_BYTES: 'zero' }), /GATEHOUSE_GIT_MAX_PUSH_BYTES must be/);
});
