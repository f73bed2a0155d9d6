// Secrets in coloured terminal output. `grep --color` (the default alias on most distributions)
// prints ESC[01;31mESC[K before the match and ESC[mESC[K after it: the CSI's final byte K is a
// letter glued to the secret, so the detectors' token boundary failed and the key went to the
// store in clear, as did a secret key after `aws_secret_access_key = ESC[32m` and a token a
// highlighter colours in two pieces. Detectors now read text as a terminal shows it (escape
// sequences skipped, findings mapped back). Checked with real grep output fed through the terminal
// recorder into a real SQLite store (the files grepped, WAL included), the stream masker in chunks
// of every size, and the store's event masking of an exec output sample. And a pause in the
// middle of a secret: the recorder flushes what it holds after 500 ms, which put the first part
// of a key (ghp_ + 32 of 36, AKIA + 6) in the store; a flushed token that begins like a secret is
// now masked, and its rest is found with it as context.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { Recorder, type SessionStartInfo } from '../../src/recorder/recorder.ts';
import { loadSigningKey } from '../../src/integrity/signing-keys.ts';
import { TerminalRecorder } from '../../src/engines/ssh/terminal-recorder.ts';
import { StreamMasker, findSecrets } from '../../src/masking/detectors.ts';
import { RECORD_DETECTORS, maskEventData } from '../../src/masking/event-masking.ts';

const KEY = 'AKIA' + 'Q3EXAMPLEZ7K2M4P';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCY' + 'EXAMPLEKEY';
const GH = 'ghp_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';
const SECRETS = [KEY, SECRET, GH];

const info: SessionStartInfo = {
  protocol: 'ssh', identityId: 'id_1', identityName: 'alice', identityKind: 'human', clientAddr: '127.0.0.1', applicationName: 'test',
  connectionId: 'conn_1', connectionName: 'box', targetHost: '127.0.0.1', targetPort: 22, targetDatabase: '', targetUser: 'root',
  recordingMode: 'durable', identityClaims: null, authMethod: 'publickey',
};

/** What a terminal shows: CSI sequences removed. */
const shown = (s: string) => s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
const leaks = (s: string) => SECRETS.filter((k) => s.includes(k) || shown(s).includes(k));

/** Real grep output, coloured as on a terminal. */
function grepColored(dir: string): string {
  const file = path.join(dir, 'credentials');
  writeFileSync(file, `[default]\naws_access_key_id = ${KEY}\naws_secret_access_key = ${SECRET}\ngithub = ${GH}\n`);
  const runs = [
    ['--color=always', 'AKIA', file], ['--color=always', '-H', 'aws_', file], ['--color=always', 'ghp_', file], ['--color=always', '-E', 'key|ghp', file],
  ].map((args) => {
    const r = spawnSync('grep', args, { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  });
  const all = runs.join('').replace(/\n/g, '\r\n');
  assert.ok(all.includes('\x1b[01;31m\x1b[K'), 'grep coloured its matches');
  return all;
}

const CASES: Array<[string, string]> = [
  ['a match coloured by grep', `aws_access_key_id = \x1b[01;31m\x1b[K${KEY.slice(0, 4)}\x1b[m\x1b[K${KEY.slice(4)}\r\n`],
  ['a whole token coloured', `id=\x1b[01;31m\x1b[K${KEY}\x1b[m\x1b[K\r\n`],
  ['a github prefix coloured', `token: \x1b[01;31m\x1b[Kghp_\x1b[m\x1b[K${GH.slice(4)}\r\n`],
  ['a secret key after a coloured name', `\x1b[01;31m\x1b[Kaws_secret_access_key\x1b[m\x1b[K = ${SECRET}\r\n`],
  ['a secret key coloured after its name', `aws_secret_access_key = \x1b[32m${SECRET}\x1b[0m\r\n`],
  ['a token highlighted in two pieces (256 colours)', `\x1b[38;5;231m${KEY.slice(0, 10)}\x1b[0m\x1b[38;5;231m${KEY.slice(10)}\x1b[0m\r\n`],
];

test('coloured output: the stream masker masks secrets cut by escape sequences, in chunks of every size; colours around them stay', () => {
  for (const [name, text] of CASES) {
    for (const size of [1, 3, 7, 16, 4096]) {
      const m = new StreamMasker({ detectors: RECORD_DETECTORS });
      let out = '';
      for (let i = 0; i < text.length; i += size) out += m.feed(text.slice(i, i + size));
      out += m.flush();
      assert.deepEqual(leaks(out), [], `${name}, chunks of ${size}: ${JSON.stringify(out)}`);
      assert.match(out, /\[masked:(aws|github)\]/, name);
    }
  }
  // Escapes outside a secret are left as they are.
  const m = new StreamMasker({ detectors: RECORD_DETECTORS });
  assert.equal(m.feed(CASES[1]![1]) + m.flush(), 'id=\x1b[01;31m\x1b[K[masked:aws]\x1b[m\x1b[K\r\n');
  // Findings map back onto the text as it came.
  const text = `x \x1b[1m${KEY}\x1b[0m y`;
  assert.deepEqual(findSecrets(text).map((f) => text.slice(f.start, f.end)), [KEY]);
  // Ordinary coloured output has nothing found in it.
  assert.deepEqual(findSecrets('\x1b[01;34mbin\x1b[0m  \x1b[01;32mbuild.sh\x1b[0m  \x1b[01;31mKAKIA\x1b[0m\r\n\x1b]0;user@host: ~\x07'), []);
});

test('coloured exec output in the store: an ssh.exit stdout sample and term.out are masked', () => {
  for (const [name, text] of CASES) {
    const ev = maskEventData('ssh.exit', { code: 0, stdout: { sample: text, bytes: text.length } }) as { stdout: { sample: string } };
    assert.deepEqual(leaks(ev.stdout.sample), [], `${name}: ${JSON.stringify(ev.stdout.sample)}`);
    const t = maskEventData('term.out', { ch: 0, d: text }) as { d: string };
    assert.deepEqual(leaks(t.d), [], name);
  }
});

test('real grep --color output through the terminal recorder: no secret in the SQLite files (WAL included)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-adv-colors-'));
  const store = new SqliteStore(path.join(dir, 'gatehouse.db'));
  const recorder = new Recorder(store, pino({ level: 'silent' }), loadSigningKey(path.join(dir, 'signing')));
  try {
    await recorder.init();
    const rec = await recorder.startSession(info);
    const t = new TerminalRecorder(rec, 0);
    const output = grepColored(dir);
    // As a terminal's writes come: in pieces.
    for (let i = 0; i < output.length; i += 11) t.output(Buffer.from(output.slice(i, i + 11)));
    t.output(Buffer.from('$ '));
    t.flush();
    await recorder.flush();
    const events = (await store.listEvents(rec.id)).filter((e) => e.type === 'term.out').map((e) => JSON.parse(e.data) as { d: string });
    const recorded = events.map((e) => e.d).join('');
    assert.ok(recorded.includes('[masked:aws]') && recorded.includes('[masked:github]'), JSON.stringify(recorded));
    assert.deepEqual(leaks(recorded), [], JSON.stringify(recorded));
    const files = readdirSync(dir).filter((f) => f.startsWith('gatehouse.db'));
    assert.ok(files.length >= 1);
    for (const f of files) {
      const bytes = readFileSync(path.join(dir, f)).toString('latin1');
      for (const k of SECRETS) assert.ok(!bytes.includes(k), `${f} holds ${k.slice(0, 4)}…`);
    }
  } finally {
    await recorder.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bounded work: 1 MB of escape sequences, and of colours around key prefixes, scan quickly', () => {
  for (const hostile of ['\x1b[K'.repeat(350_000), '\x1b[31mAKIA\x1b[0m'.repeat(70_000), `aws_secret_access_key = \x1b[32m`.repeat(30_000), '\x1b['.repeat(500_000)]) {
    const t0 = performance.now();
    findSecrets(hostile, RECORD_DETECTORS);
    const m = new StreamMasker({ detectors: RECORD_DETECTORS });
    for (let i = 0; i < hostile.length; i += 16384) m.feed(hostile.slice(i, i + 16384));
    m.flush();
    const ms = performance.now() - t0;
    assert.ok(ms < 5000, `${JSON.stringify(hostile.slice(0, 12))}…: ${ms.toFixed(0)} ms`);
  }
});

test('a pause in the middle of a secret (the recorder flushes after 500 ms) does not put its first part in the store', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-adv-pause-'));
  const store = new SqliteStore(path.join(dir, 'gatehouse.db'));
  const recorder = new Recorder(store, pino({ level: 'silent' }), loadSigningKey(path.join(dir, 'signing')));
  try {
    await recorder.init();
    const rec = await recorder.startSession(info);
    const t = new TerminalRecorder(rec, 0);
    const cuts: Array<[string, number]> = [[KEY, 10], [GH, 36], [`aws_secret_access_key = ${SECRET}`, 34], [`postgres://app:${SECRET.slice(0, 12)}@db/x`, 20]];
    for (const [s, at] of cuts) {
      t.output(Buffer.from(`$ ./slow\r\n${s.slice(0, at)}`));
      await new Promise((r) => setTimeout(r, 700));
      t.output(Buffer.from(`${s.slice(at)}\r\n`));
    }
    // Ordinary output and prompts cut by a pause are recorded as they came.
    for (const s of ['Password:', 'build-output-partial', 'token_count=3']) {
      t.output(Buffer.from(`\r\n${s}`));
      await new Promise((r) => setTimeout(r, 700));
    }
    t.flush();
    await recorder.flush();
    const recorded = (await store.listEvents(rec.id)).filter((e) => e.type === 'term.out').map((e) => (JSON.parse(e.data) as { d: string }).d).join('');
    for (const part of [KEY.slice(0, 10), GH.slice(0, 36), SECRET.slice(0, 10), SECRET.slice(0, 5)]) assert.ok(!recorded.includes(part), `${part.slice(0, 4)}… in ${JSON.stringify(recorded)}`);
    assert.ok(recorded.includes('\r\nPassword:\r\nbuild-output-partial\r\ntoken_count=3'), JSON.stringify(recorded));
  } finally {
    await recorder.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
