// The failed-sign-in limit on its own, with a clock the test moves: windows, lockouts, what is
// recorded one by one and what goes into summaries, source keys, the table bound, configuration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthThrottle, sourceKey } from '../../src/access/auth-throttle.ts';
import { applyAuthLimits, defaultAuthLimits } from '../../src/access/auth-limits-config.ts';

function clock(): { now: () => number; advance(ms: number): void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => { t += ms; } };
}

test('locks out after max failures within the window, for the lockout, then starts afresh', () => {
  const c = clock();
  const t = new AuthThrottle({ maxFailures: 3, windowMs: 10_000, lockoutMs: 60_000, recordedPerWindow: 2 }, c.now);
  assert.deepEqual([t.failed('10.0.0.1'), t.failed('10.0.0.1')].map((r) => r.record), [true, true]);
  assert.equal(t.lockedFor('10.0.0.1'), 0);
  assert.equal(t.failed('10.0.0.1').record, false, 'the third is over the recording budget');
  assert.equal(t.lockedFor('10.0.0.1'), 60_000);
  assert.equal(t.lockedFor('10.0.0.2'), 0, 'another address is not affected');
  c.advance(59_999);
  assert.equal(t.lockedFor('10.0.0.1'), 1);
  c.advance(1);
  assert.equal(t.lockedFor('10.0.0.1'), 0, 'the lockout ends');
  assert.equal(t.failed('10.0.0.1').record, true, 'a new window: recorded again');
});

test('failures spread over more than a window do not lock out', () => {
  const c = clock();
  const t = new AuthThrottle({ maxFailures: 3, windowMs: 10_000, lockoutMs: 60_000 }, c.now);
  for (let i = 0; i < 10; i++) { t.failed('10.0.0.1'); c.advance(5_001); if (i % 2 === 1) assert.equal(t.lockedFor('10.0.0.1'), 0); }
});

test('unrecorded refusals come out as one summary per source, protocol and window', () => {
  const c = clock();
  const t = new AuthThrottle({ maxFailures: 100, windowMs: 10_000, lockoutMs: 60_000, recordedPerWindow: 1 }, c.now);
  t.failed('10.0.0.1');
  for (let i = 0; i < 5; i++) {
    assert.equal(t.failed('10.0.0.1').record, false);
    t.unrecorded('10.0.0.1', 'postgres', { rateLimited: false, reason: 'token unknown', connection: 'app' });
  }
  t.unrecorded('10.0.0.1', 'ssh', { rateLimited: true, reason: 'rate-limited', connection: 'box' });
  assert.deepEqual(t.takeSummaries(), [], 'nothing before the window is over');
  c.advance(10_000);
  const sums = t.takeSummaries();
  assert.equal(sums.length, 2);
  const pg = sums.find((s) => s.protocol === 'postgres')!;
  assert.equal(pg.failed, 5);
  assert.deepEqual(pg.reasons, { 'token unknown': 5 });
  assert.deepEqual(pg.connections, ['app']);
  assert.equal(sums.find((s) => s.protocol === 'ssh')!.rateLimited, 1);
  assert.deepEqual(t.takeSummaries(true), [], 'each counted once');
});

test('the table is bounded: the oldest source goes, its counts still summarised', () => {
  const c = clock();
  const t = new AuthThrottle({ maxFailures: 2, maxSources: 3, recordedPerWindow: 0 }, c.now);
  t.failed('10.0.0.1'); t.unrecorded('10.0.0.1', 'postgres', { rateLimited: false, reason: 'x', connection: '' });
  for (const a of ['10.0.0.2', '10.0.0.3', '10.0.0.4']) t.failed(a);
  assert.deepEqual(t.takeSummaries().map((s) => s.source), ['10.0.0.1']);
});

test('source keys: IPv4-mapped addresses are IPv4, IPv6 counts per /64; loopback exempt only when asked', () => {
  assert.equal(sourceKey('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(sourceKey('2001:db8:1:2:aaaa::1'), sourceKey('2001:db8:1:2:bbbb::9'));
  assert.notEqual(sourceKey('2001:db8:1:2::1'), sourceKey('2001:db8:1:3::1'));
  assert.equal(sourceKey('2001:DB8:0001:0002::1'), sourceKey('2001:db8:1:2::5'));
  const strict = new AuthThrottle({ maxFailures: 1 });
  strict.failed('127.0.0.1');
  assert.ok(strict.lockedFor('127.0.0.1') > 0);
  const lenient = new AuthThrottle({ maxFailures: 1, exemptLoopback: true });
  lenient.failed('127.0.0.1');
  lenient.failed('::1');
  assert.equal(lenient.lockedFor('127.0.0.1'), 0);
  assert.equal(lenient.lockedFor('::1'), 0);
  const off = new AuthThrottle({ maxFailures: 0 });
  for (let i = 0; i < 100; i++) off.failed('10.0.0.1');
  assert.equal(off.lockedFor('10.0.0.1'), 0);
});

test('configuration: file section, then environment; bad values refused', () => {
  const limits = defaultAuthLimits();
  assert.deepEqual([limits.maxFailures, limits.windowMs, limits.lockoutMs, limits.recordedPerWindow, limits.exemptLoopback], [20, 60_000, 300_000, 10, false]);
  applyAuthLimits(limits, { max_failures: 7, exempt_loopback: true, lockout_ms: 5000 }, {});
  applyAuthLimits(limits, undefined, { GATEHOUSE_AUTH_MAX_FAILURES: '9', GATEHOUSE_AUTH_EXEMPT_LOOPBACK: 'false' });
  assert.deepEqual([limits.maxFailures, limits.lockoutMs, limits.exemptLoopback], [9, 5000, false]);
  assert.throws(() => applyAuthLimits(defaultAuthLimits(), { max_failures: -1 }, {}), /auth_limit\.max_failures/);
  assert.throws(() => applyAuthLimits(defaultAuthLimits(), {}, { GATEHOUSE_AUTH_WINDOW_MS: 'soon' }), /GATEHOUSE_AUTH_WINDOW_MS/);
  assert.throws(() => applyAuthLimits(defaultAuthLimits(), { window_ms: 10 }, {}), /at least 1000/);
});
