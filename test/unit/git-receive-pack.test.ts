import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FLUSH_PKT, GitProtocolError, encodePktLine, readAllPktLines } from '../../src/engines/git/pkt-line.ts';
import { AdvertisementReader, zeroId } from '../../src/engines/git/refs.ts';
import { PushRequestReader, ReportStatusReader, buildReportStatus, type PushPhase } from '../../src/engines/git/receive-pack.ts';
import { readPackCommits } from '../../src/engines/git/pack.ts';
import { encodeSideband } from '../../src/engines/git/sideband.ts';
import { NODE, SRC_GIT, Sandbox, tempDir } from './git-fixtures.ts';

const tmp = tempDir();
after(tmp.cleanup);
const sb = new Sandbox(tmp.dir);
const Z = zeroId('sha1');

// ---- genuine bytes: a receive-pack wrapper that tees both directions to files ----

const server = sb.initBare('srv.git');
sb.git(server, 'config', 'receive.advertisePushOptions', 'true');
sb.git(server, 'config', 'receive.certNonceSeed', 'test-seed');
const work = sb.initWork('work');
const inFile = sb.path('in.bin');
const outFile = sb.path('out.bin');
const tee = sb.script('tee-receive-pack.sh', `#!/bin/sh\ntee '${inFile}' | git receive-pack "$@" | tee '${outFile}'\n`);
const fakeGpg = sb.script('fake-gpg.sh', `#!/bin/sh
case "$*" in *--verify*) cat >/dev/null; exit 0;; esac
cat >/dev/null
printf -- '-----BEGIN PGP SIGNATURE-----\\n\\nnot a real signature\\n-----END PGP SIGNATURE-----\\n'
printf '\\n[GNUPG:] SIG_CREATED D 1 8 00 1700000000 ABCDEF\\n' >&2
`);

interface Capture { input: Buffer; output: Buffer; stderr: string; status: number | null }

function capturePush(args: string[], config: string[] = []): Capture {
  rmSync(inFile, { force: true });
  rmSync(outFile, { force: true });
  const r = sb.run(work, [...config.flatMap((c) => ['-c', c]), 'push', `--receive-pack=${tee}`, server, ...args], { allowFail: true });
  return { input: readFileSync(inFile), output: readFileSync(outFile), stderr: r.stderr, status: r.status };
}

/** Splits a captured server→client stream into its advertisement and what follows. */
function splitOutput(output: Buffer) {
  const ad = new AdvertisementReader();
  ad.push(output);
  assert.ok(ad.done, 'advertisement complete');
  return { ad: ad.result!, rest: ad.takeRemainder() };
}

function readRequest(input: Buffer, cut?: number): { reader: PushRequestReader; pack: Buffer; phases: PushPhase[] } {
  const reader = new PushRequestReader({ objectFormat: 'sha1' });
  const phases: PushPhase[] = [reader.phase];
  const chunks: Buffer[] = [];
  const parts = cut === undefined ? [input] : [input.subarray(0, cut), input.subarray(cut)];
  for (const part of parts) {
    reader.push(part);
    if (phases.at(-1) !== reader.phase) phases.push(reader.phase);
    chunks.push(...reader.takePackBytes());
  }
  return { reader, pack: Buffer.concat(chunks), phases };
}

const c1 = sb.commit(work, { 'a.txt': 'one\n' }, 'one');
const first = capturePush(['main']);

test('a real first push: create command, capabilities, pack bytes at every split point', () => {
  assert.equal(first.status, 0, first.stderr);
  for (let cut = 0; cut <= first.input.length; cut++) {
    const { reader, pack } = readRequest(first.input, cut);
    assert.deepEqual(reader.updates, [{ ref: 'refs/heads/main', oldId: Z, newId: c1, kind: 'create' }], `cut ${cut}`);
    assert.equal(reader.phase, 'pack');
    assert.equal(pack.subarray(0, 4).toString(), 'PACK', `cut ${cut}`);
    assert.equal(reader.packBytes, pack.length);
  }
  const { reader, pack } = readRequest(first.input);
  assert.ok(reader.capabilities.includes('report-status-v2'));
  assert.ok(reader.capabilities.includes('side-band-64k'));
  assert.ok(reader.capabilities.includes('object-format=sha1'));
  assert.equal(reader.expectsPack, true);
  assert.equal(reader.complete, false);
  const commits = readPackCommits(pack, 'sha1').commits;
  assert.deepEqual([...commits], [[c1, []]]);
  // the pack is everything after the command list's flush
  const flushAt = first.input.indexOf('0000PACK');
  assert.ok(pack.equals(first.input.subarray(flushAt + 4)));
});

test('the real server report (side-band-64k, report-status-v2) parses, and buildReportStatus reproduces it byte for byte', () => {
  const { ad, rest } = splitOutput(first.output);
  assert.ok(ad.capabilities.includes('report-status'));
  const caps = readRequest(first.input).reader.capabilities;
  const rs = new ReportStatusReader(caps);
  for (const b of rest) rs.push(Buffer.from([b])); // one byte at a time
  assert.deepEqual(rs.result, { unpack: 'ok', refs: [{ ref: 'refs/heads/main', ok: true }] });
  assert.equal(rs.ended, true);
  assert.ok(buildReportStatus(caps, 'ok', [{ ref: 'refs/heads/main', ok: true }]).equals(rest));
});

test('push options arrive after a second flush; phases go commands → push-options → pack', () => {
  const c2 = sb.commit(work, { 'a.txt': 'two\n' }, 'two');
  const cap = capturePush(['-o', 'ci.skip', '-o', 'note=hello world', 'main']);
  assert.equal(cap.status, 0, cap.stderr);
  const reader = new PushRequestReader();
  const phases: PushPhase[] = [reader.phase];
  for (const b of cap.input) {
    reader.push(Buffer.from([b]));
    if (phases.at(-1) !== reader.phase) phases.push(reader.phase);
  }
  assert.deepEqual(phases, ['commands', 'push-options', 'pack']);
  assert.deepEqual(reader.pushOptions, ['ci.skip', 'note=hello world']);
  assert.ok(reader.capabilities.includes('push-options'));
  assert.deepEqual(reader.updates, [{ ref: 'refs/heads/main', oldId: c1, newId: c2, kind: 'update' }]);
  assert.ok(readPackCommits(Buffer.concat(reader.takePackBytes()), 'sha1').commits.has(c2));
});

test('a delete-only push carries no pack; anything after the command list is refused', () => {
  sb.git(work, 'push', '-q', server, 'main:refs/heads/doomed', 'main:refs/heads/doomed2');
  const tip = sb.git(work, 'rev-parse', 'main');
  const cap = capturePush([':doomed', ':doomed2']);
  assert.equal(cap.status, 0, cap.stderr);
  const { reader, pack } = readRequest(cap.input);
  assert.deepEqual(reader.updates, [
    { ref: 'refs/heads/doomed', oldId: tip, newId: Z, kind: 'delete' },
    { ref: 'refs/heads/doomed2', oldId: tip, newId: Z, kind: 'delete' },
  ]);
  assert.equal(reader.expectsPack, false);
  assert.equal(reader.complete, true);
  assert.equal(pack.length, 0);
  assert.throws(() => reader.push(Buffer.from('PACK')), (e: unknown) => e instanceof GitProtocolError && /carries no pack/.test(e.message));
  const { rest } = splitOutput(cap.output);
  const rs = new ReportStatusReader(reader.capabilities);
  rs.push(rest);
  assert.deepEqual(rs.result?.refs.map((r) => r.ok), [true, true]);
});

test('a mixed push (delete + update + create) and a forced non-fast-forward', () => {
  sb.git(work, 'push', '-q', server, 'main:refs/heads/old');
  const before = sb.git(work, 'rev-parse', 'main');
  sb.run(work, ['commit', '-q', '--amend', '-m', 'two, rewritten']);
  const rewritten = sb.git(work, 'rev-parse', 'main');
  const cap = capturePush(['--force', ':old', 'main', 'main:refs/heads/fresh']);
  assert.equal(cap.status, 0, cap.stderr);
  const { reader, pack } = readRequest(cap.input);
  assert.deepEqual(reader.updates.map((u) => [u.ref, u.kind]).sort(), [
    ['refs/heads/fresh', 'create'],
    ['refs/heads/main', 'update'],
    ['refs/heads/old', 'delete'],
  ]);
  const main = reader.updates.find((u) => u.ref === 'refs/heads/main')!;
  assert.equal(main.oldId, before);
  assert.equal(main.newId, rewritten);
  const commits = readPackCommits(pack, 'sha1').commits;
  assert.deepEqual(commits.get(rewritten), [c1]); // the rewritten commit's parent is not the old tip
});

test('a signed push (push-cert): the commands come from the certificate', () => {
  const c3 = sb.commit(work, { 'b.txt': 'signed\n' }, 'signed');
  const before = sb.git(server, 'rev-parse', 'main');
  const cap = capturePush(['--signed', '-o', 'opt', 'main'], [`gpg.program=${fakeGpg}`]);
  assert.equal(cap.status, 0, cap.stderr);
  assert.match(cap.input.subarray(0, 20).toString('latin1'), /^[0-9a-f]{4}push-cert\0/);
  const { reader, pack } = readRequest(cap.input);
  assert.deepEqual(reader.updates, [{ ref: 'refs/heads/main', oldId: before, newId: c3, kind: 'update' }]);
  assert.match(reader.pushCert ?? '', /^certificate version 0\.1\npusher .*\npushee .*\nnonce .*\npush-option opt\n\n[0-9a-f]{40} [0-9a-f]{40} refs\/heads\/main\n-----BEGIN PGP SIGNATURE-----/);
  assert.deepEqual(reader.pushOptions, ['opt']);
  assert.ok(reader.capabilities.includes('report-status-v2'));
  assert.ok(readPackCommits(pack, 'sha1').commits.has(c3));
});

test('server-side refusals: hook output on band 2 and "ng" reasons', () => {
  sb.script('srv.git/hooks/update', '#!/bin/sh\nif [ "$1" = refs/heads/locked ]; then echo "policy says no to $1" >&2; exit 1; fi\nexit 0\n');
  sb.commit(work, { 'c.txt': 'x\n' }, 'three');
  const cap = capturePush(['main:refs/heads/locked', 'main:refs/heads/open']);
  assert.notEqual(cap.status, 0);
  const { rest } = splitOutput(cap.output);
  const rs = new ReportStatusReader(readRequest(cap.input).reader.capabilities);
  rs.push(rest);
  assert.deepEqual(rs.result, {
    unpack: 'ok',
    refs: [{ ref: 'refs/heads/locked', ok: false, reason: 'hook declined' }, { ref: 'refs/heads/open', ok: true }],
  });
  assert.match(rs.progress, /policy says no to refs\/heads\/locked/);
  rmSync(sb.path('srv.git/hooks/update'));
});

test('a push from a shallow clone sends its shallow boundary', () => {
  const tip = sb.git(server, 'rev-parse', 'main');
  const shallowClone = sb.path('shallow');
  sb.run(tmp.dir, ['clone', '-q', '--depth', '1', `file://${server}`, shallowClone]);
  const next = sb.commit(shallowClone, { 's.txt': 'from a shallow clone\n' }, 'shallow work');
  rmSync(inFile, { force: true });
  rmSync(outFile, { force: true });
  const r = sb.run(shallowClone, ['push', `--receive-pack=${tee}`, server, 'main'], { allowFail: true });
  assert.equal(r.status, 0, r.stderr);
  const { reader, pack } = readRequest(readFileSync(inFile));
  assert.deepEqual(reader.shallow, [tip]);
  assert.deepEqual(reader.updates, [{ ref: 'refs/heads/main', oldId: tip, newId: next, kind: 'update' }]);
  assert.deepEqual([...readPackCommits(pack, 'sha1').commits], [[next, [tip]]]);
});

test('malformed push requests are GitProtocolErrors', () => {
  const id = 'a'.repeat(40);
  const cmd = (line: string) => encodePktLine(line);
  const bad = (bytes: Buffer, re: RegExp, options = {}) =>
    assert.throws(() => new PushRequestReader(options).push(bytes), (e: unknown) => e instanceof GitProtocolError && re.test(e.message), re.source);
  bad(cmd(`${id} ${id}\0report-status\n`), /malformed push command/);
  bad(cmd(`${id} ${'b'.repeat(39)} refs/heads/x\0report-status\n`), /malformed object id/);
  bad(cmd(`${id} ${id} refs/heads/x\0report-status\n`), /malformed object id/, { objectFormat: 'sha256' });
  bad(cmd(`${id} ${id} refs/heads/x\0object-format=sha256\n`), /client object-format sha256 does not match sha1/, { objectFormat: 'sha1' });
  bad(Buffer.concat([cmd(`${id} ${id} refs/heads/x\n`), Buffer.from('0001')]), /unexpected delim packet in push request/);
  bad(Buffer.concat([cmd('push-cert\0report-status\n'), cmd('certificate version 0.1\n'), cmd('push-cert-end\n'), cmd(`${id} ${id} refs/heads/x\n`)]), /mixes a push certificate and unsigned commands/);
  bad(Buffer.concat([cmd('push-cert\0report-status\n'), cmd('no blank line\n'), FLUSH_PKT]), /malformed push certificate/);
  // no commands at all (nothing to push): complete, and no pack may follow
  const empty = new PushRequestReader();
  empty.push(FLUSH_PKT);
  assert.equal(empty.phase, 'pack');
  assert.equal(empty.complete, true);
  assert.deepEqual(empty.updates, []);
});

test('ReportStatusReader: plain (no side-band), v2 options, band-3 errors and malformed reports', () => {
  const report = Buffer.concat([
    encodePktLine('unpack ok\n'),
    encodePktLine('ok refs/heads/a\n'),
    encodePktLine('option refname refs/for/a\n'),
    encodePktLine('option forced-update\n'),
    encodePktLine('ng refs/heads/b stale info\n'),
    FLUSH_PKT,
  ]);
  const plain = new ReportStatusReader(['report-status-v2']);
  plain.push(report);
  assert.deepEqual(plain.result, {
    unpack: 'ok',
    refs: [
      { ref: 'refs/heads/a', ok: true, options: { refname: 'refs/for/a', 'forced-update': true } },
      { ref: 'refs/heads/b', ok: false, reason: 'stale info' },
    ],
  });
  assert.equal(plain.ended, true);
  assert.throws(() => plain.push(Buffer.from('0000')), /unexpected data after the push report/);

  const fatal = new ReportStatusReader(['report-status', 'side-band-64k']);
  fatal.push(Buffer.concat(encodeSideband(3, Buffer.from('fatal: out of disk'))));
  assert.equal(fatal.remoteError, 'fatal: out of disk');
  assert.equal(fatal.ended, true);
  assert.equal(fatal.result, null);

  const bad = new ReportStatusReader(['report-status']);
  assert.throws(() => bad.push(encodePktLine('ok refs/heads/a\n')), /does not start with "unpack"/);
  const bad2 = new ReportStatusReader(['report-status']);
  assert.throws(() => bad2.push(Buffer.concat([encodePktLine('unpack ok\n'), encodePktLine('what refs/heads/a\n')])), /malformed push report line/);
});

test('buildReportStatus: no report asked → nothing; side-band wraps at 995 bytes; reasons stay on one line', () => {
  assert.equal(buildReportStatus(['side-band-64k'], 'ok', [{ ref: 'refs/heads/a', ok: true }]).length, 0);
  const plain = buildReportStatus(['report-status'], 'ok', [{ ref: 'refs/heads/a', ok: false, reason: 'no\nway' }]);
  assert.deepEqual(readAllPktLines(plain).map((l) => (l.kind === 'data' ? l.payload.toString() : l.kind)), [
    'unpack ok\n', 'ng refs/heads/a no way\n', 'flush',
  ]);
  const refs = Array.from({ length: 40 }, (_, i) => ({ ref: `refs/heads/branch-${i}`, ok: false, reason: 'protected ref: deletion refused by gatehouse' }));
  const small = buildReportStatus(['report-status', 'side-band'], 'ok', refs);
  const outer = readAllPktLines(small);
  assert.ok(outer.length > 3);
  for (const l of outer.slice(0, -2)) assert.ok(l.kind === 'data' && l.payload.length === 996 && l.payload[0] === 1);
  const rs = new ReportStatusReader(['report-status', 'side-band']);
  rs.push(small);
  assert.equal(rs.result?.refs.length, 40);
  assert.equal(rs.result?.refs[39].reason, 'protected ref: deletion refused by gatehouse');
});

// ---- a gateway in front of the real receive-pack, as the client's --receive-pack ----

const gatewayScript = join(tmp.dir, 'gateway.ts');
const decisionsFile = sb.path('decisions.json');
writeFileSync(gatewayScript, `
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { AdvertisementReader } from '${SRC_GIT}/refs.ts';
import { encodePktLine, readAllPktLines } from '${SRC_GIT}/pkt-line.ts';
import { PushRequestReader, buildReportStatus } from '${SRC_GIT}/receive-pack.ts';
import { readPackCommits } from '${SRC_GIT}/pack.ts';
import { decideFastForward } from '${SRC_GIT}/fast-forward.ts';
import { needsFastForwardCheck } from '${SRC_GIT}/protected-refs.ts';
import { protectionDecision as checkProtection } from '${SRC_GIT}/../../policy/policy.ts';
import { askTargetFor } from '${join(SRC_GIT, '../../../test/unit/git-fixtures.ts')}';

const repo = process.argv[2];
const protect = (process.env.GH_PROTECT ?? 'main').split(',');
const strip = (process.env.GH_STRIP ?? '').split(' ').filter(Boolean);
const child = spawn('git', ['receive-pack', repo], { stdio: ['pipe', 'pipe', 'inherit'] });
const ad = new AdvertisementReader();
const adChunks = [];
let forwarding = false;
child.stdout.on('data', (chunk) => {
  if (forwarding) { process.stdout.write(chunk); return; }
  adChunks.push(chunk);
  ad.push(chunk);
  if (!ad.done || adChunks.length === 0) return;
  const raw = Buffer.concat(adChunks);
  adChunks.length = 0;
  adChunks.push(Buffer.alloc(0)); // marks the advertisement as sent
  let out = raw;
  if (strip.length > 0) {
    // rewrite the capability list of the first ref line
    const lines = readAllPktLines(raw);
    const parts = [];
    let done = false;
    for (const l of lines) {
      if (l.kind !== 'data') { parts.push(Buffer.from('0000')); continue; }
      let text = l.payload.toString('latin1');
      const nul = text.indexOf('\\0');
      if (!done && nul >= 0) {
        const caps = text.slice(nul + 1).trim().split(' ').filter((c) => !strip.includes(c));
        text = text.slice(0, nul + 1) + caps.join(' ') + '\\n';
        done = true;
      }
      parts.push(encodePktLine(Buffer.from(text, 'latin1')));
    }
    out = Buffer.concat(parts);
  }
  process.stdout.write(out);
});

const req = new PushRequestReader();
const requestChunks = [];
let decided = false;
process.stdin.on('data', (chunk) => {
  requestChunks.push(chunk);
  req.push(chunk);
  if (req.complete) void decide();
});
process.stdin.on('end', () => void decide());

async function decide() {
  if (decided) return;
  decided = true;
  const fmt = ad.result?.objectFormat ?? 'sha1';
  const packBytes = Buffer.concat(req.takePackBytes());
  const pushed = packBytes.length > 0 ? readPackCommits(packBytes, fmt).commits : new Map();
  const decisions = [];
  for (const u of req.updates) {
    let ff;
    let detail;
    if (needsFastForwardCheck(u, protect)) {
      const d = await decideFastForward(u, pushed, askTargetFor(repo));
      ff = d.fastForward;
      detail = d.method + ': ' + d.detail;
    }
    decisions.push({ update: u, ff, detail, check: checkProtection(u, protect, ff) });
  }
  writeFileSync(${JSON.stringify(decisionsFile)}, JSON.stringify({ capabilities: req.capabilities, decisions }));
  if (decisions.every((d) => d.check.allowed)) {
    forwarding = true;
    child.stdin.end(Buffer.concat(requestChunks));
    return;
  }
  child.stdin.end();
  const results = decisions.map((d) => ({ ref: d.update.ref, ok: false, reason: d.check.reason ?? 'push refused: another ref in it is protected' }));
  process.stdout.write(buildReportStatus(req.capabilities, 'ok', results));
}
`);
const gatewayCmd = `${NODE} ${gatewayScript}`;

const gwServer = sb.initBare('gw.git');
const gwWork = sb.initWork('gw-work');
const base = sb.commit(gwWork, { 'f.txt': 'base\n' }, 'base');
sb.git(gwWork, 'push', '-q', gwServer, 'main', 'main:refs/heads/feature');

interface Decision { update: { ref: string; kind: string }; ff?: boolean; detail?: string; check: { allowed: boolean; reason?: string } }

function gatewayPush(args: string[], env: Record<string, string> = {}) {
  rmSync(decisionsFile, { force: true });
  const r = sb.run(gwWork, ['push', `--receive-pack=${gatewayCmd}`, gwServer, ...args], { allowFail: true, env });
  const log = existsSync(decisionsFile) ? (JSON.parse(readFileSync(decisionsFile, 'utf8')) as { capabilities: string[]; decisions: Decision[] }) : null;
  return { status: r.status, stderr: r.stderr, log };
}

test('gateway: a fast-forward to a protected branch goes through to the server', () => {
  const next = sb.commit(gwWork, { 'f.txt': 'next\n' }, 'next');
  const r = gatewayPush(['main']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /\.\.[0-9a-f]+ +main -> main/);
  assert.equal(sb.git(gwServer, 'rev-parse', 'main'), next);
  assert.deepEqual(r.log?.decisions.map((d) => [d.update.ref, d.ff, d.check.allowed]), [['refs/heads/main', true, true]]);
  assert.match(r.log!.decisions[0].detail!, /^pack: current tip [0-9a-f]{12} reached through 1 pushed commit/);
});

for (const variant of [
  { name: 'side-band-64k + report-status-v2', strip: '' },
  { name: 'plain report-status, no side-band', strip: 'side-band-64k side-band report-status-v2' },
  { name: 'report-status v1 inside side-band-64k', strip: 'report-status-v2' },
]) {
  test(`gateway: the client prints "! [remote rejected] main -> main (...)" for a forced rewrite (${variant.name})`, () => {
    const before = sb.git(gwServer, 'rev-parse', 'main');
    sb.run(gwWork, ['commit', '-q', '--amend', '-m', `rewritten ${variant.name}`]);
    const r = gatewayPush(['--force', 'main'], { GH_STRIP: variant.strip });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /! \[remote rejected\] main -> main \(protected ref: non-fast-forward update refused by gatehouse\)/);
    assert.equal(sb.git(gwServer, 'rev-parse', 'main'), before);
    const caps = r.log!.capabilities;
    assert.equal(caps.includes('side-band-64k'), !variant.strip.includes('side-band-64k'));
    assert.equal(caps.includes('report-status-v2'), variant.strip === '');
    assert.equal(caps.includes('report-status'), variant.strip !== '');
    assert.match(r.log!.decisions[0].detail!, /does not contain the current tip/);
    sb.run(gwWork, ['reset', '-q', '--hard', before]);
  });
}

test('gateway: deleting a protected branch is refused; an unprotected one may be rewritten', () => {
  const del = gatewayPush([':main']);
  assert.notEqual(del.status, 0);
  assert.match(del.stderr, /! \[remote rejected\] main \(protected ref: deletion refused by gatehouse\)/);
  assert.ok(sb.git(gwServer, 'rev-parse', 'main'));

  sb.git(gwWork, 'checkout', '-q', '-b', 'topic', base);
  sb.commit(gwWork, { 't.txt': 't\n' }, 'topic work');
  assert.equal(gatewayPush(['topic:feature']).status, 0);
  sb.run(gwWork, ['commit', '-q', '--amend', '-m', 'topic work, rewritten']);
  const r = gatewayPush(['--force', 'topic:feature']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /\+ [0-9a-f]+\.\.\.[0-9a-f]+ topic -> feature \(forced update\)/);
  sb.git(gwWork, 'checkout', '-q', 'main');
});

test('gateway: moving main to a commit the server already has (empty pack) is proven by asking the target', () => {
  const feature = sb.git(gwServer, 'rev-parse', 'feature');
  const main = sb.git(gwServer, 'rev-parse', 'main');
  // feature (topic work) descends from base, not from main's current tip: refused
  sb.git(gwWork, 'fetch', '-q', gwServer, 'feature');
  const refused = gatewayPush([`+${feature}:refs/heads/main`]);
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr, /! \[remote rejected\] [0-9a-f]+ -> main \(protected ref: non-fast-forward/);
  // a branch on the server that descends from main: accepted without sending any commit
  sb.git(gwWork, 'checkout', '-q', '-b', 'ahead', main);
  const ahead = sb.commit(gwWork, { 'g.txt': 'g\n' }, 'ahead');
  sb.git(gwWork, 'push', '-q', gwServer, 'ahead');
  const r = gatewayPush(['ahead:main']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(sb.git(gwServer, 'rev-parse', 'main'), ahead);
  assert.match(r.log!.decisions[0].detail!, /^target: current tip/);
  sb.git(gwWork, 'checkout', '-q', 'main');
});
