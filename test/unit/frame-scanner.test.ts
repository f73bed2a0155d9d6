import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameScanner, ProtocolError } from '../../src/engines/postgres/codec/frame-scanner.ts';

function frame(type: string, body: Buffer | string): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const out = Buffer.alloc(5 + b.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + b.length, 1);
  b.copy(out, 5);
  return out;
}

function collect(opts: { max?: number; streamable?: (t: number) => boolean; streamAbove?: number } = {}) {
  const frames: Array<{ type: string; body: string }> = [];
  const streamed: Array<{ type: string; len: number }> = [];
  const scanner = new FrameScanner({
    frame: (t, b, s, e) => frames.push({ type: String.fromCharCode(t), body: b.toString('latin1', s, e) }),
    streamed: (t, n) => streamed.push({ type: String.fromCharCode(t), len: n }),
  }, { maxFrameBytes: opts.max ?? 1024, streamable: opts.streamable, streamAbove: opts.streamAbove });
  return { scanner, frames, streamed };
}

test('frames whole messages in one chunk without copying', () => {
  const { scanner, frames } = collect();
  scanner.push(Buffer.concat([frame('Q', 'select 1\0'), frame('S', ''), frame('X', '')]));
  assert.deepEqual(frames, [{ type: 'Q', body: 'select 1\0' }, { type: 'S', body: '' }, { type: 'X', body: '' }]);
  assert.ok(scanner.atBoundary);
});

test('reassembles a message split at every possible byte boundary', () => {
  const stream = Buffer.concat([frame('Q', 'select 1\0'), frame('P', 'abc\0def\0\0\0'), frame('S', '')]);
  for (let cut1 = 1; cut1 < stream.length; cut1++) {
    for (let cut2 = cut1; cut2 < stream.length; cut2++) {
      const { scanner, frames } = collect();
      scanner.push(stream.subarray(0, cut1));
      scanner.push(stream.subarray(cut1, cut2));
      scanner.push(stream.subarray(cut2));
      assert.equal(frames.length, 3, `cuts ${cut1},${cut2}`);
      assert.equal(frames[1].body, 'abc\0def\0\0\0');
      assert.ok(scanner.atBoundary);
    }
  }
});

test('byte-at-a-time delivery yields the same frames', () => {
  const stream = Buffer.concat([frame('D', 'row-1'), frame('D', 'row-22'), frame('C', 'SELECT 2\0')]);
  const { scanner, frames } = collect();
  for (const byte of stream) scanner.push(Buffer.from([byte]));
  assert.deepEqual(frames.map((f) => f.body), ['row-1', 'row-22', 'SELECT 2\0']);
});

test('length fields below 4 are protocol violations', () => {
  for (const len of [0, 3, -1]) {
    const { scanner } = collect();
    const bad = Buffer.from([0x51, 0, 0, 0, 0]);
    bad.writeInt32BE(len, 1);
    assert.throws(() => scanner.push(bad), (err: unknown) => err instanceof ProtocolError && err.sqlState === '08P01');
  }
});

test('oversized frames are refused with 54000 unless their type may stream', () => {
  const { scanner } = collect({ max: 100 });
  const huge = Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff]);
  assert.throws(() => scanner.push(huge), (err: unknown) => err instanceof ProtocolError && err.sqlState === '54000');

  const s2 = collect({ max: 100, streamable: (t) => t === 0x64, streamAbove: 100 });
  const body = Buffer.alloc(1000, 0x61);
  const big = frame('d', body);
  s2.scanner.push(big.subarray(0, 300));
  assert.equal(s2.scanner.atBoundary, false);
  s2.scanner.push(Buffer.concat([big.subarray(300), frame('c', '')]));
  assert.deepEqual(s2.streamed, [{ type: 'd', len: 1000 }]);
  assert.deepEqual(s2.frames, [{ type: 'c', body: '' }]);
  assert.ok(s2.scanner.atBoundary);
});

test('a streamable frame that fits in its chunk is still delivered whole', () => {
  const { scanner, frames, streamed } = collect({ max: 10, streamable: () => true, streamAbove: 10 });
  scanner.push(frame('d', 'x'.repeat(50)));
  assert.equal(frames.length, 1);
  assert.equal(streamed.length, 0);
});

test('a header claiming a huge frame costs only the bytes that arrive, and the frame is whole once complete', () => {
  const frames: Buffer[] = [];
  const scanner = new FrameScanner({ frame: (_t, b, s, e) => frames.push(Buffer.from(b.subarray(s, e))) }, { maxFrameBytes: 64 * 1024 * 1024 });
  const before = process.memoryUsage().arrayBuffers;
  const header = Buffer.alloc(5);
  header[0] = 0x51;
  header.writeInt32BE(60 * 1024 * 1024 + 4, 1);
  scanner.push(Buffer.concat([header, Buffer.from('select ')]));
  const grown = process.memoryUsage().arrayBuffers - before;
  assert.ok(grown < 4 * 1024 * 1024, `${grown} bytes held for a frame of which 7 bytes arrived`);
  // The rest arrives in pieces; the handler gets the exact body.
  const rest = Buffer.alloc(60 * 1024 * 1024 - 7, 0x61);
  for (let i = 0; i < rest.length; i += 1 << 20) scanner.push(rest.subarray(i, i + (1 << 20)));
  assert.equal(frames.length, 1);
  assert.equal(frames[0].length, 60 * 1024 * 1024);
  assert.equal(frames[0].subarray(0, 8).toString(), 'select a');
  assert.ok(scanner.atBoundary);
});

test('a large frame is whole and exact whatever the piece sizes around the point where it gets its own buffer', () => {
  const size = 300 * 1024;
  const body = Buffer.alloc(size);
  for (let i = 0; i < size; i++) body[i] = (i * 31 + 7) & 0xff;
  const whole = frame('P', body);
  for (const piece of [1000, 4096, 65_536, size / 4 - 3, size / 4 + 5, 77_777]) {
    const frames: Buffer[] = [];
    const scanner = new FrameScanner({ frame: (_t, b, s, e) => frames.push(Buffer.from(b.subarray(s, e))) }, { maxFrameBytes: 1024 * 1024 });
    for (let i = 0; i < whole.length; i += piece) scanner.push(Buffer.from(whole.subarray(i, i + piece)));
    assert.equal(frames.length, 1, `piece ${piece}`);
    assert.ok(frames[0].equals(body), `piece ${piece}: the body is exact`);
    assert.ok(scanner.atBoundary);
  }
});
