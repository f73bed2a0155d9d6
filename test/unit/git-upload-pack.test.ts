import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { DELIM_PKT, FLUSH_PKT, GitProtocolError, MAX_PKT_LEN, encodePktLine } from '../../src/engines/git/pkt-line.ts';
import { UploadPackRequestReader, type UploadPackSummary } from '../../src/engines/git/upload-pack.ts';
import { Sandbox, tempDir } from './git-fixtures.ts';

const tmp = tempDir();
after(tmp.cleanup);
const sb = new Sandbox(tmp.dir);

const work = sb.initWork('work');
const c1 = sb.commit(work, { 'a.txt': 'one\n' }, 'one');
const c2 = sb.commit(work, { 'a.txt': 'two\n' }, 'two');
sb.git(work, 'branch', 'feature', c1);
sb.git(work, 'tag', '-a', '-m', 'release', 'v1', c2);
const server = sb.path('server.git');
sb.run(tmp.dir, ['clone', '-q', '--bare', work, server]);
sb.git(server, 'config', 'uploadpack.allowFilter', 'true');
const tipObjects = new Set(sb.git(server, 'for-each-ref', '--format=%(objectname)').split('\n'));

const inFile = sb.path('in.bin');
const tee = sb.script('tee-upload-pack.sh', `#!/bin/sh\ntee '${inFile}' | git upload-pack "$@"\n`);
const url = `file://${server}`;

function capture(cwd: string, args: string[]): Buffer {
  rmSync(inFile, { force: true });
  sb.run(cwd, args);
  return readFileSync(inFile);
}

function read(input: Buffer, step = input.length): { summary: UploadPackSummary; ended: boolean; maxBuffered: number } {
  const r = new UploadPackRequestReader();
  let maxBuffered = 0;
  for (let i = 0; i < input.length; i += step) {
    r.push(input.subarray(i, i + step));
    maxBuffered = Math.max(maxBuffered, r.buffered);
  }
  return { summary: r.summary, ended: r.ended, maxBuffered };
}

test('a real v0 clone: wants every advertised tip, no haves, done', () => {
  const input = capture(tmp.dir, ['-c', 'protocol.version=0', 'clone', '-q', `--upload-pack=${tee}`, url, sb.path('clone-v0')]);
  const { summary, ended } = read(input);
  assert.equal(summary.protocol, 0);
  assert.deepEqual(new Set(summary.wants), tipObjects);
  assert.equal(summary.wantCount, summary.wants.length);
  assert.equal(summary.haves, 0);
  assert.equal(summary.done, true);
  assert.equal(ended, true);
  assert.ok(summary.capabilities.includes('side-band-64k'));
  assert.ok(summary.capabilities.some((c) => c.startsWith('agent=git/')));
  assert.deepEqual(summary.commands, []);
  // one byte at a time: only ever part of one pkt-line held
  const slow = read(input, 1);
  assert.deepEqual(slow.summary, summary);
  const longestLine = parseInt(input.subarray(0, 4).toString(), 16); // the first want line, with its capabilities
  assert.equal(slow.maxBuffered, longestLine - 1);
});

test('a real v2 clone: ls-refs with ref prefixes, then fetch', () => {
  const input = capture(tmp.dir, ['-c', 'protocol.version=2', 'clone', '-q', `--upload-pack=${tee}`, url, sb.path('clone-v2')]);
  const { summary, ended } = read(input);
  assert.equal(summary.protocol, 2);
  assert.deepEqual(summary.commands, ['ls-refs', 'fetch']);
  assert.ok(summary.refPrefixes.includes('refs/heads/'));
  assert.ok(summary.refPrefixes.includes('refs/tags/'));
  assert.deepEqual(new Set(summary.wants), tipObjects);
  assert.equal(summary.done, true);
  // git closes the connection after its last command rather than sending a closing flush
  assert.equal(ended, false);
  assert.ok(summary.capabilities.some((c) => c.startsWith('agent=git/')));
  assert.ok(summary.capabilities.includes('object-format=sha1'));
  assert.deepEqual(read(input, 7).summary, summary);
});

test('real incremental fetches send haves; an up-to-date fetch wants nothing', () => {
  const clone = sb.path('clone-v0');
  for (const version of ['0', '2']) {
    const c3 = sb.commit(work, { 'a.txt': `v${version}\n` }, `for v${version}`);
    sb.git(work, 'push', '-q', server, 'main');
    const input = capture(clone, ['-c', `protocol.version=${version}`, 'fetch', '-q', `--upload-pack=${tee}`, 'origin']);
    const { summary } = read(input);
    assert.equal(summary.protocol, version === '2' ? 2 : 0);
    assert.deepEqual(summary.wants, [c3]);
    assert.ok(summary.haves >= 1, `haves in v${version}`);
    // v0 ends negotiation with "done"; in v2 the server answered "ready" and sent the pack unasked
    assert.equal(summary.done, version === '0');
  }
  const none = capture(clone, ['-c', 'protocol.version=0', 'fetch', '-q', `--upload-pack=${tee}`, 'origin']);
  const r = read(none);
  assert.equal(r.summary.wantCount, 0);
  assert.equal(r.ended, true);
  assert.equal(r.summary.done, false);
});

test('shallow and partial clones record deepen and filter', () => {
  for (const version of ['0', '2']) {
    const input = capture(tmp.dir, ['-c', `protocol.version=${version}`, 'clone', '-q', '--no-checkout', '--depth', '1', '--filter=blob:none', `--upload-pack=${tee}`, url, sb.path(`shallow-v${version}`)]);
    const { summary } = read(input);
    assert.equal(summary.deepen, 'deepen 1', `v${version}`);
    assert.equal(summary.filter, 'blob:none', `v${version}`);
  }
});

test('v2 want-ref and synthetic edge cases', () => {
  const r = new UploadPackRequestReader({ protocol: 2 });
  r.push(Buffer.concat([
    encodePktLine('command=fetch\n'), encodePktLine('agent=x\n'), DELIM_PKT,
    encodePktLine('want-ref refs/heads/main\n'), encodePktLine(`want ${c1}\n`), encodePktLine(`have ${c2}\n`), encodePktLine('done\n'), FLUSH_PKT,
  ]));
  assert.deepEqual(r.summary.wantRefs, ['refs/heads/main']);
  assert.deepEqual(r.summary.wants, [c1]);
  assert.equal(r.summary.haves, 1);
  assert.equal(r.ended, false);
  r.push(FLUSH_PKT);
  assert.equal(r.ended, true);

  const capped = new UploadPackRequestReader({ maxRecorded: 2 });
  capped.push(Buffer.concat([encodePktLine(`want ${c1} ofs-delta\n`), encodePktLine(`want ${c2}\n`), encodePktLine(`want ${c1}\n`), FLUSH_PKT]));
  assert.equal(capped.summary.wantCount, 3);
  assert.equal(capped.summary.wants.length, 2);

  assert.throws(() => new UploadPackRequestReader().push(encodePktLine('want nothex\n')), (e: unknown) => e instanceof GitProtocolError && /malformed want line/.test(e.message));
  assert.throws(() => new UploadPackRequestReader().push(encodePktLine('bogus\n')), /unexpected line in the want list/);
  assert.throws(() => new UploadPackRequestReader({ protocol: 2 }).push(encodePktLine('fetch\n')), /expected a v2 command/);
  const big = new UploadPackRequestReader();
  big.push(Buffer.from('fff0'));
  assert.equal(big.buffered, 4);
  assert.ok(MAX_PKT_LEN === 65520);
});
