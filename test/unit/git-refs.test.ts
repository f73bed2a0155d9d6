import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { GitProtocolError, encodePktLine, FLUSH_PKT, readAllPktLines } from '../../src/engines/git/pkt-line.ts';
import { AdvertisementReader, parseAdvertisement, capabilityValue } from '../../src/engines/git/refs.ts';
import { Sandbox, tempDir } from './git-fixtures.ts';

const tmp = tempDir();
after(tmp.cleanup);
const sb = new Sandbox(tmp.dir);

// A bare repository with two branches, a lightweight and an annotated tag.
const work = sb.initWork('work');
const c1 = sb.commit(work, { a: '1' }, 'one');
const c2 = sb.commit(work, { a: '2' }, 'two');
sb.git(work, 'branch', 'feature', c1);
sb.git(work, 'tag', 'light', c1);
sb.git(work, 'tag', '-a', '-m', 'annotated', 'v1', c2);
const tagId = sb.git(work, 'rev-parse', 'v1');
const bare = sb.path('srv.git');
sb.run(tmp.dir, ['clone', '-q', '--bare', work, bare]);

function advertise(service: 'upload-pack' | 'receive-pack', repo: string, protocol = ''): Buffer {
  return sb.run(repo, [service, '--advertise-refs', '.'], { env: { GIT_PROTOCOL: protocol } }).stdout;
}

test('receive-pack advertisement: refs, capabilities on the first line, object format', () => {
  const ad = parseAdvertisement(readAllPktLines(advertise('receive-pack', bare)));
  assert.equal(ad.version, 0);
  assert.deepEqual(
    [...ad.refs],
    [['refs/heads/feature', c1], ['refs/heads/main', c2], ['refs/tags/light', c1], ['refs/tags/v1', tagId]],
  );
  assert.equal(ad.peeled.size, 0); // receive-pack does not peel
  assert.ok(ad.capabilities.includes('report-status'));
  assert.ok(ad.capabilities.includes('side-band-64k'));
  assert.ok(ad.capabilities.includes('delete-refs'));
  assert.equal(ad.objectFormat, 'sha1');
  assert.match(capabilityValue(ad.capabilities, 'agent') ?? '', /^git\//);
});

test('upload-pack advertisement: HEAD, peeled tags and the HEAD symref', () => {
  const ad = parseAdvertisement(readAllPktLines(advertise('upload-pack', bare)));
  assert.equal(ad.refs.get('HEAD'), c2);
  assert.equal(ad.refs.get('refs/tags/v1'), tagId);
  assert.equal(ad.peeled.get('refs/tags/v1'), c2);
  assert.equal(ad.refs.has('refs/tags/v1^{}'), false);
  assert.equal(ad.symrefs.get('HEAD'), 'refs/heads/main');
  assert.ok(ad.capabilities.includes('multi_ack_detailed'));
});

test('empty repositories: receive-pack sends capabilities^{}, upload-pack only a flush', () => {
  const empty = sb.initBare('empty.git');
  const rp = parseAdvertisement(readAllPktLines(advertise('receive-pack', empty)));
  assert.equal(rp.refs.size, 0);
  assert.ok(rp.capabilities.includes('report-status'));
  const up = parseAdvertisement(readAllPktLines(advertise('upload-pack', empty)));
  assert.equal(up.refs.size, 0);
  assert.deepEqual(up.capabilities, []);
});

test('protocol v1 opens with "version 1"; v2 advertises capabilities instead of refs', () => {
  const v1 = parseAdvertisement(readAllPktLines(advertise('receive-pack', bare, 'version=1')));
  assert.equal(v1.version, 1);
  assert.equal(v1.refs.get('refs/heads/main'), c2);
  const v2 = parseAdvertisement(readAllPktLines(advertise('upload-pack', bare, 'version=2')));
  assert.equal(v2.version, 2);
  assert.equal(v2.refs.size, 0);
  assert.ok(v2.capabilities.some((c) => c.startsWith('fetch')));
  assert.ok(v2.capabilities.some((c) => c.startsWith('ls-refs')));
  assert.equal(v2.objectFormat, 'sha1');
});

test('smart HTTP info/refs from git http-backend, with its "# service=" header', () => {
  const r = spawnSync('git', ['http-backend'], {
    env: {
      ...sb.env,
      GIT_PROJECT_ROOT: tmp.dir,
      GIT_HTTP_EXPORT_ALL: '1',
      PATH_INFO: '/srv.git/info/refs',
      QUERY_STRING: 'service=git-upload-pack',
      REQUEST_METHOD: 'GET',
    },
  });
  assert.equal(r.status, 0, r.stderr.toString());
  const body = r.stdout.subarray(r.stdout.indexOf('\r\n\r\n') + 4);
  assert.match(body.subarray(0, 40).toString(), /^001e# service=git-upload-pack\n0000/);
  const ad = parseAdvertisement(readAllPktLines(body));
  assert.equal(ad.service, 'git-upload-pack');
  assert.equal(ad.refs.get('refs/heads/main'), c2);
  assert.ok(ad.capabilities.includes('side-band-64k'));
});

test('sha256 repositories advertise object-format=sha256 and 64-digit ids', () => {
  const w = sb.initWork('w256', 'sha256');
  const id = sb.commit(w, { f: 'x' }, 'one');
  const ad = parseAdvertisement(readAllPktLines(advertise('receive-pack', w)));
  assert.equal(ad.objectFormat, 'sha256');
  assert.equal(ad.refs.get('refs/heads/main'), id);
  assert.equal(id.length, 64);
});

test('AdvertisementReader stops at the first flush and keeps what follows', () => {
  const ad = advertise('receive-pack', bare);
  const after = Buffer.concat([encodePktLine('\x01000eunpack ok\n'), FLUSH_PKT]);
  const stream = Buffer.concat([ad, after]);
  for (const step of [1, 7, 100, stream.length]) {
    const r = new AdvertisementReader();
    for (let i = 0; i < stream.length; i += step) r.push(stream.subarray(i, i + step));
    assert.ok(r.done, `step ${step}`);
    assert.equal(r.result!.refs.get('refs/heads/main'), c2);
    assert.ok(r.takeRemainder().equals(after), `step ${step}`);
  }
  const partial = new AdvertisementReader();
  partial.push(ad.subarray(0, ad.length - 4));
  assert.equal(partial.done, false);
});

test('malformed advertisements and server errors are GitProtocolErrors', () => {
  const bad = (lines: string[], re: RegExp) =>
    assert.throws(() => parseAdvertisement(readAllPktLines(Buffer.concat([...lines.map((l) => encodePktLine(l)), FLUSH_PKT]))), (e: unknown) => e instanceof GitProtocolError && re.test(e.message));
  bad(['ERR access denied\n'], /remote error: access denied/);
  bad(['xyz refs/heads/main\0caps\n'], /malformed object id/);
  bad([`${'a'.repeat(40)}\n`], /malformed ref advertisement line/);
  bad([`${'a'.repeat(40)} refs/heads/a\0object-format=sha256\n`], /40 hex digits but object-format is sha256/);
  assert.throws(() => parseAdvertisement(readAllPktLines(encodePktLine(`${'a'.repeat(40)} refs/heads/a\n`))), /without a flush/);
});
