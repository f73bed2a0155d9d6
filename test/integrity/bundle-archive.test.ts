// The bundle as one file (what the console downloads): gatehouse verify unpacks it into a private
// temporary directory only after checking what it holds, so a crafted archive cannot write
// outside it, smuggle links, or pass two bundles off as one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { readTar, tarArchive } from '../../src/integrity/tar.ts';
import { verifyBundleArchive } from '../../src/integrity/bundle.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-archive-test-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function archive(name: string, entries: Parameters<typeof tarArchive>[0], patch?: (b: Buffer) => void): string {
  const tar = tarArchive(entries);
  patch?.(tar);
  const file = path.join(dir, name);
  writeFileSync(file, gzipSync(tar));
  return file;
}
const file = (name: string, text = 'x') => ({ name, data: Buffer.from(text), mtime: 0 });

test('tarArchive and readTar agree (system tar unpacking it: test/console/browser-live.test.ts)', () => {
  const entries = [{ name: 's_1/', dir: true, mtime: 0 }, file('s_1/a.txt', 'a'.repeat(700)), file('s_1/keys/k.pem', 'k')];
  const back = readTar(tarArchive(entries));
  assert.deepEqual(back.map((e) => [e.name, e.dir, e.data.toString()]), [['s_1', true, ''], ['s_1/a.txt', false, 'a'.repeat(700)], ['s_1/keys/k.pem', false, 'k']]);
});

test('names that climb out, absolute names and odd characters are refused before anything is written', () => {
  for (const bad of ['s_1/../../escaped', '/tmp/abs', 's_1/a b', 's_1/./x']) {
    const r = verifyBundleArchive(archive('bad.tar.gz', [file(bad)]));
    assert.equal(r.ok, false);
    assert.match(r.problem!, /is not allowed/, bad);
  }
  assert.equal(existsSync(path.join(dir, '..', 'escaped')), false);
});

test('links and other entry types are refused', () => {
  const r = verifyBundleArchive(archive('link.tar.gz', [file('s_1/events.jsonl')], (b) => {
    b.write('2', 156); // symlink
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : b[i]!;
    b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  }));
  assert.equal(r.ok, false);
  assert.match(r.problem!, /not a regular file or directory/);
});

test('one bundle directory, once: two directories, a bare file or a repeated entry are refused; damage is reported', () => {
  assert.match(verifyBundleArchive(archive('two.tar.gz', [file('s_1/manifest.json'), file('s_2/manifest.json')])).problem!, /must hold one bundle directory/);
  assert.match(verifyBundleArchive(archive('bare.tar.gz', [file('manifest.json')])).problem!, /not a bundle directory/);
  assert.match(verifyBundleArchive(archive('twice.tar.gz', [file('s_1/a'), file('s_1/a')])).problem!, /twice/);
  assert.match(verifyBundleArchive(archive('nomanifest.tar.gz', [file('s_1/events.jsonl')])).problem!, /no manifest\.json/);
  const cut = path.join(dir, 'cut.tar.gz');
  writeFileSync(cut, gzipSync(tarArchive([file('s_1/a', 'y'.repeat(2000))]).subarray(0, 1024)));
  assert.match(verifyBundleArchive(cut).problem!, /cut short/);
  const junk = path.join(dir, 'junk.tar.gz');
  writeFileSync(junk, Buffer.from('not an archive at all'.repeat(40)));
  assert.match(verifyBundleArchive(junk).problem!, /not a tar archive/);
});
