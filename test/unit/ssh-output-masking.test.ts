// The SSH client's output masking (src/engines/ssh/output-masking.ts) without sockets: pass-through
// when no rule applies (the same Buffer, nothing held), bytes kept exactly (random binary and UTF-8
// in random chunk sizes), per-detector styles, the idle flush and its upper bound under output that
// never pauses, a mask rule that appears and goes while a stream is open, and columns-only rules.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { parsePolicyFile } from '../../src/policy/policy-file.ts';
import { CompiledPolicy, type MaskPlan } from '../../src/policy/policy.ts';
import { ChannelOutputMasking, IDLE_MS, MAX_HOLD_MS, transfersFiles } from '../../src/engines/ssh/output-masking.ts';
import { maskingKey } from '../../src/masking/detectors.ts';
import type { PolicySubject } from '../../src/policy/types.ts';

const AWS_KEY = 'AKIA' + 'Q3EXAMPLEZ7K2M4P';
const GH_TOKEN = 'ghp_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';
const agent: PolicySubject = { identity: 'bot', kind: 'agent', groups: [] };
const place = { connection: 'box', type: 'ssh' };
const key = maskingKey('test key material');

function planOf(yaml: string): MaskPlan | null {
  return new CompiledPolicy(parsePolicyFile(yaml), 1, 'h').maskingFor(agent, place);
}

const RULES = planOf(`
rules:
  - name: keys
    when: { kinds: [agent] }
    action: mask
    mask: { detectors: [aws, private_key], style: redact }
  - name: tokens
    when: { kinds: [agent] }
    action: mask
    mask: { detectors: [github], style: partial }
`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A channel's stdout with what it sends collected (from transform and from the sink). */
function channel(plan: () => MaskPlan | null) {
  const masking = new ChannelOutputMasking({ masking: plan }, key);
  const sent: Buffer[] = [];
  const s = masking.stream('stdout', (b) => sent.push(b));
  return {
    masking, sent,
    write(c: Buffer | string): Buffer | undefined {
      const chunk = Buffer.isBuffer(c) ? c : Buffer.from(c);
      const m = s.transform(chunk);
      sent.push(m ?? chunk);
      return m;
    },
    text: () => Buffer.concat(sent).toString(),
  };
}

describe('SSH client output masking', () => {
  it('passes chunks through untouched when no mask rule applies (no copy, nothing held)', () => {
    const c = channel(() => null);
    const chunk = Buffer.from(`key ${AWS_KEY} `);
    assert.equal(c.write(chunk), undefined, 'the chunk is sent as it came');
    assert.equal(c.write(Buffer.from('partial-tok')), undefined);
    assert.equal(c.masking.notes().length, 0);
    // A columns-only rule has nothing to do over SSH.
    const columns = planOf('rules:\n  - name: c\n    when: { kinds: [agent] }\n    action: mask\n    mask: { columns: ["*.email"] }\n');
    assert.ok(columns);
    assert.equal(channel(() => columns).write(chunk), undefined);
  });

  it('keeps bytes exactly: 4 MB of random binary and UTF-8 in random chunks', () => {
    const bin = randomBytes(4 * 1024 * 1024);
    const utf8 = Buffer.from('héllo wörld — ✓ 日本語 '.repeat(20000));
    for (const data of [bin, utf8]) {
      const c = channel(() => RULES);
      for (let at = 0; at < data.length;) {
        const n = 1 + Math.floor(Math.random() * 40000);
        c.write(data.subarray(at, at + n));
        at += n;
      }
      c.masking.flush();
      const out = Buffer.concat(c.sent);
      // Random binary may hold a detector's shape by chance; only then may it differ.
      if (data === utf8) assert.equal(c.masking.notes().length, 0);
      if (c.masking.notes().length === 0) assert.ok(out.equals(data), 'byte-identical');
    }
  });

  it('masks each detector in its own rule\'s style, a secret cut at every position, and notes rule and detector', () => {
    const text = `a ${AWS_KEY} b ${GH_TOKEN} c\n`;
    for (let cut = 1; cut < text.length; cut++) {
      const c = channel(() => RULES);
      c.write(text.slice(0, cut));
      c.write(text.slice(cut));
      c.masking.flush();
      assert.equal(c.text(), `a [masked:aws] b ${'*'.repeat(GH_TOKEN.length - 4)}${GH_TOKEN.slice(-4)} c\n`, `cut at ${cut}`);
      assert.deepEqual(c.masking.notes().map((n) => `${n.field} ${n.rule} ${n.detector} ${n.count}`).sort(), ['stdout keys aws 1', 'stdout tokens github 1']);
    }
  });

  it(`sends what it holds after ${IDLE_MS} ms without output, and within ${MAX_HOLD_MS} ms while output keeps coming`, async () => {
    const c = channel(() => RULES);
    c.write('prompt$ ech');
    assert.equal(c.text(), 'prompt$ ', 'the last token is held');
    await sleep(IDLE_MS + 40);
    assert.equal(c.text(), 'prompt$ ech', 'and sent after the idle delay');
    // A token growing every 20 ms (faster than the idle delay) is still sent within the bound.
    const c2 = channel(() => RULES);
    const t0 = Date.now();
    let firstAt = 0;
    for (let i = 0; i < 30 && !firstAt; i++) {
      c2.write('x');
      await sleep(20);
      if (c2.text().length > 0) firstAt = Date.now() - t0;
    }
    assert.ok(firstAt > 0 && firstAt <= MAX_HOLD_MS + 60, `held ${firstAt} ms`);
  });

  it('starts masking when a rule comes into force mid-stream, and stops (sending what it held) when it goes', () => {
    let plan: MaskPlan | null = null;
    const c = channel(() => plan);
    assert.equal(c.write(`before ${AWS_KEY}\n`), undefined);
    plan = RULES;
    c.write(`during ${AWS_KEY} tail`);
    plan = null;
    const m = c.write(' after\n');
    assert.ok(m, 'the held tail goes out ahead of the next chunk');
    assert.equal(c.text(), `before ${AWS_KEY}\nduring [masked:aws] tail after\n`);
  });

  it('bounded work on hostile output: 1 MB of near-matches in 512-byte writes', () => {
    const MB = 1024 * 1024;
    const hostile: Record<string, string> = {
      'AKIA runs': 'AKIA'.repeat(MB / 4),
      'one huge token': 'a'.repeat(MB),
      'BEGIN then base64 forever': '-----BEGIN RSA PRIVATE KEY-----\n' + ('A'.repeat(64) + '\n').repeat(MB / 65),
      'BEGIN headers, no END': '-----BEGIN RSA PRIVATE KEY-----\n'.repeat(MB / 32),
      'digits with separators': '4111 '.repeat(MB / 5),
      'eyJ runs': 'eyJ'.repeat(MB / 3),
      'mixed': 'AKIA ghp_ glpat- xoxb- sk_live_ AIza eyJ :// password= 4111 '.repeat(MB / 64),
    };
    for (const [name, text] of Object.entries(hostile)) {
      const c = channel(() => RULES);
      const buf = Buffer.from(text, 'latin1');
      const t0 = performance.now();
      for (let at = 0; at < buf.length; at += 512) c.write(buf.subarray(at, at + 512));
      c.masking.flush();
      const ms = performance.now() - t0;
      console.log(`# ${name}: 1 MB in 512-byte writes, ${ms.toFixed(0)} ms`);
      assert.ok(ms < 3000, `${name} took ${ms.toFixed(0)} ms`);
    }
  });

  it('tells file-transfer commands apart', () => {
    assert.equal(transfersFiles('rsync --server -vlogDtpre.iLsfxCIvu . /tmp/x'), true);
    assert.equal(transfersFiles('/usr/bin/rsync --server --sender -e.LsfxC . src'), true);
    assert.equal(transfersFiles('cat rsync --server'), false);
    assert.equal(transfersFiles('rsync -av a b'), false);
  });
});
