import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  DELIM_PKT, FLUSH_PKT, GitProtocolError, PktLineReader, RESPONSE_END_PKT, encodePktLine, readAllPktLines, type PktLine,
} from '../../src/engines/git/pkt-line.ts';
import { SidebandDemuxer, demuxSideband, encodeSideband, negotiatedSideband } from '../../src/engines/git/sideband.ts';
import { Sandbox, tempDir } from './git-fixtures.ts';

const tmp = tempDir();
after(tmp.cleanup);
const sb = new Sandbox(tmp.dir);

function describe(l: PktLine): string {
  return l.kind === 'data' ? `data:${l.payload.toString('latin1')}` : l.kind;
}

function readAll(reader: PktLineReader): string[] {
  const out: string[] = [];
  for (let l = reader.next(); l !== null; l = reader.next()) out.push(describe(l));
  return out;
}

test('encodes pkt-lines with a 4-hex-digit length that counts the header', () => {
  assert.equal(encodePktLine('a\n').toString(), '0006a\n');
  assert.equal(encodePktLine(Buffer.from('hello')).toString(), '0009hello');
  assert.equal(encodePktLine('').toString(), '0004');
  assert.equal(FLUSH_PKT.toString(), '0000');
  assert.equal(encodePktLine('x'.repeat(65516)).subarray(0, 4).toString(), 'fff0');
  assert.throws(() => encodePktLine('x'.repeat(65517)), GitProtocolError);
});

test('reads data, flush, delim and response-end across every chunk split', () => {
  const stream = Buffer.concat([encodePktLine('want abc\n'), DELIM_PKT, encodePktLine(''), FLUSH_PKT, encodePktLine('done\n'), RESPONSE_END_PKT]);
  const expected = ['data:want abc\n', 'delim', 'data:', 'flush', 'data:done\n', 'response-end'];
  for (let a = 0; a <= stream.length; a++) {
    for (let b = a; b <= stream.length; b++) {
      const r = new PktLineReader();
      const got: string[] = [];
      for (const part of [stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)]) {
        r.push(part);
        got.push(...readAll(r));
      }
      assert.deepEqual(got, expected, `split at ${a},${b}`);
      assert.equal(r.buffered, 0);
    }
  }
});

test('returns payloads as views of the pushed chunk when a line is within one chunk', () => {
  const chunk = Buffer.concat([encodePktLine('abc'), encodePktLine('def')]);
  const r = new PktLineReader();
  r.push(chunk);
  const l = r.next();
  assert.ok(l !== null && l.kind === 'data');
  assert.equal(l.payload.buffer, chunk.buffer);
  assert.equal(l.payload.byteOffset, chunk.byteOffset + 4);
});

test('holds an incomplete line until the rest arrives and reports buffered bytes', () => {
  const r = new PktLineReader();
  r.push(Buffer.from('000ahel'));
  assert.equal(r.next(), null);
  assert.equal(r.buffered, 7);
  r.push(Buffer.from('lo\n'));
  assert.deepEqual(readAll(r), ['data:hello\n']);
  assert.equal(r.buffered, 0);
  assert.equal(r.consumed, 10);
});

test('takeRemainder hands over the raw bytes that follow the last line read', () => {
  const r = new PktLineReader();
  r.push(Buffer.concat([encodePktLine('cmd\n'), FLUSH_PKT, Buffer.from('PACK\0\0')]));
  r.push(Buffer.from('\0\x02rest'));
  assert.deepEqual([describe(r.next()!), describe(r.next()!)], ['data:cmd\n', 'flush']);
  assert.equal(r.buffered, 12);
  assert.equal(r.takeRemainder().toString('latin1'), 'PACK\0\0\0\x02rest');
  assert.equal(r.buffered, 0);
  assert.equal(r.takeRemainder().length, 0);
});

test('accepts upper-case hex lengths as git does', () => {
  const r = new PktLineReader();
  r.push(Buffer.from('000Aabcdef'));
  assert.deepEqual(readAll(r), ['data:abcdef']);
});

test('rejects malformed lengths with the offending bytes and position', () => {
  const cases: Array<[string, RegExp]> = [
    ['00zzabc', /invalid pkt-line length "00zz" at byte 0/],
    ['0003', /invalid pkt-line length "0003"/],
    ['fff1' + 'x'.repeat(10), /pkt-line length 65521 exceeds 65520/],
    ['0006ok-00g1', /invalid pkt-line length "-00g" at byte 6/],
  ];
  for (const [input, re] of cases) {
    const r = new PktLineReader();
    r.push(Buffer.from(input));
    assert.throws(() => readAll(r), (err: unknown) => err instanceof GitProtocolError && re.test(err.message), input);
  }
  assert.throws(() => readAllPktLines(Buffer.from('0009abc')), /truncated pkt-line: 7 byte/);
});

test('parses a real upload-pack advertisement fed one byte at a time', () => {
  const repo = sb.initWork('w');
  sb.commit(repo, { a: '1' }, 'one');
  const ad = sb.run(repo, ['upload-pack', '--advertise-refs', '.']).stdout;
  const whole = readAllPktLines(ad).map(describe);
  assert.ok(whole.length >= 3);
  assert.equal(whole.at(-1), 'flush');
  const r = new PktLineReader();
  const got: string[] = [];
  for (let i = 0; i < ad.length; i++) {
    r.push(ad.subarray(i, i + 1));
    got.push(...readAll(r));
  }
  assert.deepEqual(got, whole);
});

test('side-band: splits data at 65515 bytes (64k) or 995 bytes and demuxes it back', () => {
  const data = Buffer.alloc(70000);
  for (let i = 0; i < data.length; i++) data[i] = i % 251;
  const big = encodeSideband(1, data, 'side-band-64k');
  assert.deepEqual(big.map((p) => p.length), [65520, 70000 - 65515 + 5]);
  assert.equal(big[0].subarray(0, 5).toString('latin1'), 'fff0\x01');
  const small = encodeSideband(2, data.subarray(0, 2000), 'side-band');
  assert.deepEqual(small.map((p) => p.length), [1000, 1000, 2000 - 2 * 995 + 5]);
  assert.deepEqual(encodeSideband(1, Buffer.alloc(0)), []);

  const r = new PktLineReader();
  r.push(Buffer.concat([...big, ...encodeSideband(2, Buffer.from('Counting objects\r')), ...encodeSideband(3, Buffer.from('fatal: oops')), FLUSH_PKT]));
  const demux = new SidebandDemuxer();
  const parts: Buffer[] = [];
  const kinds: string[] = [];
  for (let l = r.next(); l !== null; l = r.next()) {
    const ev = demux.push(l);
    kinds.push(ev.kind);
    if (ev.kind === 'data') parts.push(ev.data);
  }
  assert.deepEqual(kinds, ['data', 'data', 'progress', 'error', 'flush']);
  assert.ok(Buffer.concat(parts).equals(data));
  assert.equal(demux.progress, 'Counting objects\r');
  assert.equal(demux.errorMessage, 'fatal: oops');
  assert.equal(demux.dataBytes, 70000);
});

test('side-band: rejects an unknown band and control packets other than flush', () => {
  assert.throws(() => demuxSideband({ kind: 'data', payload: Buffer.from('\x05x') }), /invalid side-band 5/);
  assert.throws(() => demuxSideband({ kind: 'data', payload: Buffer.alloc(0) }), /without a band byte/);
  assert.throws(() => demuxSideband({ kind: 'delim' }), /unexpected delim packet/);
  assert.equal(negotiatedSideband(['report-status', 'side-band', 'side-band-64k']), 'side-band-64k');
  assert.equal(negotiatedSideband(['side-band']), 'side-band');
  assert.equal(negotiatedSideband(['report-status']), null);
});
