// HeldPush (src/engines/git/push-hold.ts) without sockets: real push requests (commands from git's
// own ids, packs from git pack-objects) fed in chunks; what it forwards byte for byte, what it
// refuses and why, what it records, and that its spool file is gone afterwards in every case.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { encodePktLine, FLUSH_PKT } from '../../src/engines/git/pkt-line.ts';
import { HeldPush, type PushOutcome } from '../../src/engines/git/push-hold.ts';
import { Sandbox, tempDir } from './git-fixtures.ts';

const tmp = tempDir();
after(tmp.cleanup);
const sb = new Sandbox(tmp.dir);
const ZERO = '0'.repeat(40);

const repo = sb.initWork('w');
const c1 = sb.commit(repo, { a: 'one\n' }, 'one');
const c2 = sb.commit(repo, { a: 'two\n', big: 'x'.repeat(200_000) }, 'two');
sb.git(repo, 'checkout', '-q', '-b', 'other', c1);
const c3 = sb.commit(repo, { a: 'three\n' }, 'three (not after two)');

function request(commands: Array<[string, string, string]>, pack: Buffer | null, caps = 'report-status side-band-64k'): Buffer {
  const lines = commands.map(([o, n, r], i) => encodePktLine(`${o} ${n} ${r}${i === 0 ? `\0${caps}` : ''}\n`));
  return Buffer.concat([...lines, FLUSH_PKT, ...(pack ? [pack] : [])]);
}

interface Recorded { type: string; data: Record<string, unknown> }

let spoolN = 0;
function held(opts: { protect?: string[]; maxPushBytes?: number; failRecord?: boolean } = {}) {
  const records: Recorded[] = [];
  const spoolDir = join(tmp.dir, `spool-${++spoolN}`);
  const push = new HeldPush({
    protect: opts.protect ?? ['main'], limits: { maxPushBytes: opts.maxPushBytes ?? 1 << 30, spoolDir },
    rec: {
      beforeForward: (type, data) => { records.push({ type, data: data as Record<string, unknown> }); return opts.failRecord ? Promise.reject(new Error('store down')) : Promise.resolve(); },
      append: (type, data) => { records.push({ type, data: data as Record<string, unknown> }); },
    },
    recordBase: { repo: '/r.git' }, objectFormat: () => 'sha1',
  });
  const spoolFiles = () => { try { return readdirSync(spoolDir); } catch { return []; } };
  return { push, records, spoolFiles };
}

async function feed(push: HeldPush, bytes: Buffer, chunk: number, end = true): Promise<PushOutcome> {
  for (let off = 0; off < bytes.length; off += chunk) {
    if (!push.write(bytes.subarray(off, off + chunk))) await new Promise((r) => push.once('drain', r));
  }
  if (end) push.end();
  return push.outcome;
}

async function readAll(s: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of s) out.push(c as Buffer);
  return Buffer.concat(out);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const ffPack = sb.pack(repo, [c2, `^${c1}`], ['--delta-base-offset']);

test('a proven fast-forward of a protected ref is replayed byte for byte from the spool, which is then removed', async () => {
  for (const chunk of [1, 1000, 1 << 20]) {
    const { push, records, spoolFiles } = held();
    const req = request([[c1, c2, 'refs/heads/main']], ffPack);
    const outcome = await feed(push, req, chunk);
    assert.equal(outcome.kind, 'forward');
    assert.equal(spoolFiles().length, 1, 'held on disk until replayed');
    const body = await readAll((outcome as Extract<PushOutcome, { kind: 'forward' }>).body);
    assert.equal(sha(body), sha(req), `the target gets exactly what the client sent (chunks of ${chunk})`);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(spoolFiles(), []);
    const gp = records.find((r) => r.type === 'git.push')!.data;
    assert.equal(gp.verdict, 'allowed');
    assert.equal(gp.packBytes, ffPack.length);
    const u = (gp.updates as Array<Record<string, unknown>>)[0];
    assert.equal(u.class, 'fast-forward');
    assert.match(String(u.evidence), /^pack: current tip [0-9a-f]{12} reached through 1 pushed commit/);
  }
});

test('a rewrite of a protected ref is refused with the report git prints; nothing forwarded, nothing left on disk', async () => {
  const { push, records, spoolFiles } = held();
  const pack = sb.pack(repo, [c3, `^${c2}`], ['--delta-base-offset']);
  const outcome = await feed(push, request([[c2, c3, 'refs/heads/main']], pack), 4096);
  // c3's parent c1 is not in the pack and nothing can be asked: not proven.
  assert.equal(outcome.kind, 'refuse');
  assert.match((outcome as { report: Buffer }).report.toString('latin1'), /ng refs\/heads\/main protected ref: update refused by gatehouse \(fast-forward not verified\)/);
  assert.deepEqual(spoolFiles(), []);
  assert.deepEqual(records.map((r) => r.type), ['git.push', 'git.push.result']);
  assert.equal(records[1].data.refusedByGateway, true);
});

test('over the byte limit: drained, refused with an unpack error and ng lines, spool removed', async () => {
  const limit = Math.floor(ffPack.length / 2);
  const { push, records, spoolFiles } = held({ maxPushBytes: limit });
  const outcome = await feed(push, request([[c1, c2, 'refs/heads/main'], [ZERO, c2, 'refs/heads/topic']], ffPack), 16 * 1024);
  assert.equal(outcome.kind, 'refuse');
  const report = (outcome as { report: Buffer }).report.toString('latin1');
  assert.ok(report.includes(`unpack gatehouse refused a push of more than ${limit} bytes (the limit for pushes to protected refs, git.max_push_bytes)\n`), report);
  assert.ok(report.includes(`ng refs/heads/main protected ref: push too large for gatehouse to verify (over ${limit} bytes, git.max_push_bytes)\n`), report);
  assert.match(report, /ng refs\/heads\/topic not applied: another ref update in this push was refused by gatehouse/);
  assert.deepEqual(spoolFiles(), []);
  assert.equal(records.find((r) => r.type === 'git.push.result')!.data.packBytes, ffPack.length, 'every byte drained and counted');
});

test('a corrupt or truncated pack on a protected update is refused as unreadable', async () => {
  const corrupt = Buffer.from(ffPack);
  corrupt.fill(0x5a, 40, 60);
  for (const pack of [corrupt, ffPack.subarray(0, ffPack.length - 100)]) {
    const { push, records, spoolFiles } = held();
    const outcome = await feed(push, request([[c1, c2, 'refs/heads/main']], pack), 8192);
    assert.equal(outcome.kind, 'refuse');
    const u = (records.find((r) => r.type === 'git.push')!.data.updates as Array<Record<string, unknown>>)[0];
    assert.match(String(u.evidence), /^the pushed pack could not be read: pack (corrupt|truncated|checksum)/);
    assert.deepEqual(spoolFiles(), []);
  }
});

test('a malformed command list fails before anything is forwarded', async () => {
  const { push, records } = held();
  const outcome = await feed(push, Buffer.concat([encodePktLine('this is not a command\n'), FLUSH_PKT]), 5);
  assert.deepEqual(outcome.kind, 'fail');
  assert.match((outcome as { message: string }).message, /^malformed push request: malformed push command/);
  assert.equal(records[0].data.refusedByGateway, true);
});

test('deleting a protected ref is refused at once, before the client ends (it waits for the report)', async () => {
  const { push } = held();
  const outcome = await feed(push, request([[c2, ZERO, 'refs/heads/main']], null), 7, false);
  assert.equal(outcome.kind, 'refuse');
  assert.match((outcome as { report: Buffer }).report.toString('latin1'), /ng refs\/heads\/main protected ref: deletion refused by gatehouse/);
});

test('an unprotected push streams at once (before the client ends) and is classified for the record afterwards', async () => {
  const { push, records, spoolFiles } = held({ protect: [] });
  const req = request([[c2, c3, 'refs/heads/main']], sb.pack(repo, [c3, `^${c1}`], ['--delta-base-offset']));
  const outcome = await feed(push, req, 3000, false);
  assert.equal(outcome.kind, 'forward');
  const body = readAll((outcome as Extract<PushOutcome, { kind: 'forward' }>).body);
  push.end();
  assert.equal(sha(await body), sha(req));
  assert.deepEqual(spoolFiles(), [], 'nothing held');
  if (!push.writableFinished) await new Promise((r) => push.once('finish', r));
  await push.recordForwarded({ unpack: 'ok', refs: [{ ref: 'refs/heads/main', ok: true }] }, { exit: 0 });
  const result = records.find((r) => r.type === 'git.push.result')!.data;
  assert.equal(result.refusedByGateway, false);
  assert.equal(result.unpack, 'ok');
  // c1 (c3's parent) is not in the pack: the rewrite cannot be proven from the pack alone.
  assert.deepEqual((result.updates as Array<Record<string, unknown>>).map((u) => u.class), ['unknown']);
});

test('a push that cannot be recorded is not forwarded', async () => {
  const { push, spoolFiles } = held({ failRecord: true });
  const outcome = await feed(push, request([[c1, c2, 'refs/heads/main']], ffPack), 65536);
  assert.equal(outcome.kind, 'fail');
  assert.match((outcome as { message: string }).message, /cannot record right now; nothing was sent to the target/);
  assert.deepEqual(spoolFiles(), []);
});

test('abort frees the spool of a push in progress', async () => {
  const { push, spoolFiles } = held();
  const outcome = feed(push, request([[c1, c2, 'refs/heads/main']], ffPack.subarray(0, 5000)), 1000, false);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(spoolFiles().length, 1);
  push.abort('the client closed the channel');
  assert.deepEqual(await outcome, { kind: 'fail', message: 'the client closed the channel' });
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(spoolFiles(), []);
});

// ── Held for approval ───────────────────────────────────────────────────────────────────────

import { CompiledPolicy } from '../../src/policy/policy.ts';
import type { Hold, HoldOutcome } from '../../src/approvals/approval-service.ts';
import type { RefPolicy } from '../../src/engines/git/push-guard.ts';

/** The policy stage with one rule holding pushes to refs/heads/hold/*. */
function holdingPolicy(): RefPolicy {
  const policy = new CompiledPolicy({ rules: [{ name: 'hold-it', when: {}, git: { refs: ['hold/*'] }, action: 'hold' }] }, 1, 'h');
  const rules = policy.rulesFor({ identity: 'bot', kind: 'agent', groups: [], claims: null }, { connection: 'c', type: 'ssh' });
  return { caresAboutRef: (ref) => policy.caresAboutRef(rules, ref), decide: (updates) => policy.decideIn(rules, { kind: 'git', updates }) };
}

/** A HeldPush with approvals the test decides by hand. */
function heldForApproval(opts: { maxPushBytes?: number } = {}) {
  const records: Recorded[] = [];
  const spoolDir = join(tmp.dir, `spool-${++spoolN}`);
  const asked: Array<{ action: unknown; decide(o: HoldOutcome): void; withdrawn: string | null }> = [];
  const notices: string[] = [];
  const push = new HeldPush({
    protect: [], policy: holdingPolicy(), limits: { maxPushBytes: opts.maxPushBytes ?? 1 << 30, spoolDir },
    rec: {
      beforeForward: (type, data) => { records.push({ type, data: data as Record<string, unknown> }); return Promise.resolve(); },
      append: (type, data) => { records.push({ type, data: data as Record<string, unknown> }); },
    },
    recordBase: { repo: '/r.git' }, objectFormat: () => 'sha1',
    holds: {
      hold: (_verdict, action): Hold => {
        let settle!: (o: HoldOutcome) => void;
        const entry = { action, decide: (o: HoldOutcome) => settle(o), withdrawn: null as string | null };
        asked.push(entry);
        return { id: `apr_${asked.length}`, expiresAt: Date.now() + 60_000, outcome: new Promise((r) => { settle = r; }), withdraw: (why) => { entry.withdrawn = why; settle({ kind: 'withdrawn', reason: why }); } };
      },
    },
    notify: (m) => notices.push(m),
  });
  const spoolFiles = () => { try { return readdirSync(spoolDir); } catch { return []; } };
  return { push, records, asked, notices, spoolFiles };
}

const settledWithin = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), ms))]);

test('a held push waits once the client has sent it all; approved, it is replayed byte for byte and its record names the request', async () => {
  const { push, records, asked, notices, spoolFiles } = heldForApproval();
  const req = request([[c1, c2, 'refs/heads/hold/x']], ffPack);
  const outcome = feed(push, req, 1000);
  for (let i = 0; i < 50 && asked.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(asked.length, 1, 'one approval request for the push');
  assert.deepEqual((asked[0]!.action as { updates: Array<{ ref: string; old: string; new: string }> }).updates.map((u) => [u.ref, u.old, u.new]), [['refs/heads/hold/x', c1, c2]]);
  assert.match(notices[0]!, /this push is held for approval: .*request apr_1/);
  assert.equal(await settledWithin(outcome, 100), false, 'nothing forwarded while held');
  assert.equal(spoolFiles().length, 1);
  asked[0]!.decide({ kind: 'approved', by: ['dora'] });
  const o = await outcome;
  assert.equal(o.kind, 'forward');
  assert.equal(sha(await readAll((o as Extract<PushOutcome, { kind: 'forward' }>).body)), sha(req));
  const gp = records.find((r) => r.type === 'git.push')!.data;
  assert.deepEqual([gp.verdict, gp.held], ['allowed', { request: 'apr_1', outcome: 'approved' }]);
});

test('a held push the approver denies is refused in the report with the reason; a deletion is held at its commands', async () => {
  const { push, asked } = heldForApproval();
  const outcome = feed(push, request([[c1, c2, 'refs/heads/hold/x']], ffPack), 1 << 20);
  for (let i = 0; i < 50 && asked.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  asked[0]!.decide({ kind: 'denied', by: 'dora', reason: 'freeze' });
  const o = await outcome;
  assert.equal(o.kind, 'refuse');
  assert.match((o as Extract<PushOutcome, { kind: 'refuse' }>).report.toString('latin1'), /ng refs\/heads\/hold\/x .*denied by dora: freeze/);

  // Only a deletion: no pack follows and the client waits for the report, so it is held at once.
  const del = heldForApproval();
  const delOutcome = feed(del.push, request([[c1, ZERO, 'refs/heads/hold/y']], null), 1 << 20, false);
  for (let i = 0; i < 50 && del.asked.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(del.asked.length, 1);
  del.asked[0]!.decide({ kind: 'approved', by: ['dora'] });
  const d = await delOutcome;
  assert.equal(d.kind, 'forward');
  assert.equal(sha(await readAll((d as Extract<PushOutcome, { kind: 'forward' }>).body)), sha(request([[c1, ZERO, 'refs/heads/hold/y']], null)));
});

test('a held push the client abandons withdraws its request; one too large to keep is refused without asking anyone', async () => {
  const { push, asked, spoolFiles } = heldForApproval();
  const outcome = feed(push, request([[c1, c2, 'refs/heads/hold/x']], ffPack), 1 << 20);
  for (let i = 0; i < 50 && asked.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  push.abort('the client closed the channel');
  assert.equal(asked[0]!.withdrawn, 'the client closed the channel');
  assert.equal((await outcome).kind, 'fail');
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(spoolFiles(), []);

  const big = heldForApproval({ maxPushBytes: 150 }); // the command list fits, the pack does not
  const o = await feed(big.push, request([[c1, c2, 'refs/heads/hold/x']], ffPack), 1 << 20);
  assert.equal(big.asked.length, 0, 'nobody is asked about a push that cannot be kept');
  assert.equal(o.kind, 'refuse');
  assert.match((o as Extract<PushOutcome, { kind: 'refuse' }>).report.toString('latin1'), /ng refs\/heads\/hold\/x held for approval, but the push is too large for gatehouse to keep/);
});
