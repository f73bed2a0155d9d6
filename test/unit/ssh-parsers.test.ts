// Pure parts of the SSH engine, without sockets: command recognition, SFTP framing across
// arbitrary chunk boundaries, and the asciicast derived from terminal events.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseScpCommand } from '../../src/engines/ssh/scp-tracker.ts';
import { SftpFramer, SftpProtocolError, MAX_SFTP_PACKET } from '../../src/engines/ssh/sftp/sftp-framer.ts';
import { toAsciicast, terminalChannels } from '../../src/recorder/asciicast.ts';
import { matchesGlob } from '../../src/util/glob.ts';
import { BoundedCapture } from '../../src/engines/ssh/output-capture.ts';
import { createHash } from 'node:crypto';

test('scp commands: direction, target and recursion as OpenSSH sends them', () => {
  assert.deepEqual(parseScpCommand('scp -t /tmp/x'), { direction: 'upload', target: '/tmp/x', recursive: false });
  assert.deepEqual(parseScpCommand('scp -r -d -t -- /srv/dir'), { direction: 'upload', target: '/srv/dir', recursive: true });
  assert.deepEqual(parseScpCommand("scp -f '/tmp/a b'"), { direction: 'download', target: '/tmp/a b', recursive: false });
  assert.equal(parseScpCommand('scp file host:'), null);
  assert.equal(parseScpCommand('echo scp -t /x'), null);
});

function sftpPacket(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length + 1, 0);
  head[4] = type;
  return Buffer.concat([head, body]);
}

test('SFTP framing yields the same packets whatever the chunk boundaries', () => {
  const packets = [sftpPacket(1, Buffer.from([0, 0, 0, 3])), sftpPacket(6, Buffer.alloc(70_000, 7)), sftpPacket(4, Buffer.from('handle'))];
  const stream = Buffer.concat(packets);
  for (const size of [1, 3, 5, 4096, 65_536, stream.length]) {
    const seen: Buffer[] = [];
    const framer = new SftpFramer((p) => seen.push(Buffer.from(p)));
    for (let i = 0; i < stream.length; i += size) framer.push(stream.subarray(i, i + size));
    assert.equal(seen.length, 3, `chunk size ${size}`);
    assert.deepEqual(seen.map((p) => p[0]), [1, 6, 4]);
    assert.equal(seen[1]!.length, 70_001);
  }
});

test('SFTP framing refuses a packet length beyond what OpenSSH allows', () => {
  const framer = new SftpFramer(() => {});
  const bad = Buffer.alloc(8);
  bad.writeUInt32BE(MAX_SFTP_PACKET + 10, 0);
  assert.throws(() => framer.push(bad), SftpProtocolError);
});

test('asciicast v2 from terminal events: header, timing, output, input and resize', () => {
  const t0 = 1_700_000_000_000_000;
  const events = [
    { ts: t0, type: 'ssh.shell', data: { ch: 1, pty: { term: 'xterm', cols: 100, rows: 30 } } },
    { ts: t0 + 250_000, type: 'term.out', data: { ch: 1, d: '$ ' } },
    { ts: t0 + 1_000_000, type: 'term.in', data: { ch: 1, d: 'ls\r' } },
    { ts: t0 + 1_500_000, type: 'term.resize', data: { ch: 1, cols: 120, rows: 40 } },
    { ts: t0 + 1_600_000, type: 'term.out', data: { ch: 2, d: 'other channel' } },
  ];
  const [ch] = terminalChannels(events);
  const lines = toAsciicast(events, ch!, 'demo').trimEnd().split('\n');
  const header = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(header.version, 2);
  assert.equal(header.width, 100);
  assert.equal(header.height, 30);
  assert.deepEqual(lines.slice(1).map((l) => JSON.parse(l) as unknown[]), [[0.25, 'o', '$ '], [1, 'i', 'ls\r'], [1.5, 'r', '120x40']]);
});

test('an exec without a pty is not a terminal channel', () => {
  assert.equal(terminalChannels([{ ts: 0, type: 'ssh.exec', data: { ch: 1, command: 'ls', pty: null } }]).length, 0);
  assert.equal(terminalChannels([{ ts: 0, type: 'ssh.exec', data: { ch: 1, command: 'top', pty: { cols: 80, rows: 24, term: 'xterm' } } }]).length, 1);
});

test('environment globs', () => {
  assert.ok(matchesGlob('LC_ALL', 'LC_*'));
  assert.ok(matchesGlob('GIT_PROTOCOL', 'GIT_PROTOCOL'));
  assert.ok(!matchesGlob('LD_PRELOAD', 'LC_*'));
  assert.ok(!matchesGlob('XLC_ALL', 'LC_*'));
  assert.ok(!matchesGlob('A.B', 'A?C'));
});

test('bounded output capture: sample cut, full size and hash kept, binary as base64', () => {
  const cap = new BoundedCapture(10);
  const data = Buffer.from('hello world, this is longer than ten bytes');
  cap.add(data.subarray(0, 7));
  cap.add(data.subarray(7));
  const r = cap.result();
  assert.equal(r.bytes, data.length);
  assert.equal(r.sha256, createHash('sha256').update(data).digest('hex'));
  assert.equal(r.sample, 'hello worl');
  assert.equal(r.truncated, true);
  const bin = new BoundedCapture(100);
  bin.add(Buffer.from([0xff, 0xfe, 0x00, 0x80]));
  assert.equal(bin.result().encoding, 'base64');
});
