// TerminalLineGate without sockets: which line it reconstructs from keystrokes at each Enter, where
// it stops a chunk, and which editing makes a line unreadable (so that it is refused, never
// judged on a guess).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TerminalLineGate, type SubmittedLine } from '../../src/engines/ssh/terminal-line-gate.ts';
import type { Verdict } from '../../src/policy/types.ts';

const DENY: Verdict = { decision: 'deny', rule: 'r', reason: 'no', policyVersion: 1 };
const ALLOW: Verdict = { decision: 'allow', rule: null, reason: 'ok', policyVersion: 1 };

/** A gate that records every submitted line and refuses those `refuse` picks. */
function gate(refuse: (l: SubmittedLine) => boolean = () => false) {
  const lines: SubmittedLine[] = [];
  const g = new TerminalLineGate((l) => { lines.push(l); return refuse(l) ? DENY : ALLOW; });
  return { g, lines };
}

const b = (s: string) => Buffer.from(s, 'utf8');

test('typed text, backspace, Ctrl-U, Ctrl-W and Ctrl-C are followed; CR, LF and CR LF are one Enter each', () => {
  const { g, lines } = gate();
  assert.equal(g.scan(b('ls -lx\x7f\r')), null);
  assert.equal(g.scan(b('rm -rf /\x15echo hi\n')), null);
  assert.equal(g.scan(b('git push origin\x17main\r\n')), null);
  assert.equal(g.scan(b('oops\x03date\r')), null);
  // After Ctrl-C the line is also judged with what was typed before it.
  assert.deepEqual(lines.map((l) => l.text), ['ls -l', 'echo hi', 'git push main', 'date', 'oopsdate']);
});

test('keystrokes arrive one per chunk, UTF-8 split across chunks included', () => {
  const { g, lines } = gate();
  for (const byte of b('echo héllo\r')) g.scan(Buffer.from([byte]));
  assert.deepEqual(lines.map((l) => l.text), ['echo héllo']);
});

test('a chunk stops at the first refused Enter; scanning goes on from after it', () => {
  const { g, lines } = gate((l) => l.text === 'rm -rf /');
  const chunk = b('ls\rrm -rf /\rdate\r');
  const stop = g.scan(chunk)!;
  assert.equal(stop.at, chunk.indexOf('\rdate'));
  assert.equal(stop.line.text, 'rm -rf /');
  assert.equal(g.scan(chunk, stop.at + 1), null);
  assert.deepEqual(lines.map((l) => l.text), ['ls', 'rm -rf /', 'date']);
});

test('history, cursor keys, completion, Alt keys and other control keys make the line unreadable; the next line is fresh', () => {
  for (const [keys, why] of [
    ['\x1b[A\r', /cursor, history/], ['echo x\x1b[Dy\r', /cursor/], ['rm -r\t\r', /completion/], ['ls\x1bb\r', /Alt/],
    ['\x12rm\r', /Ctrl-R/], ['echo\x1bOA\r', /cursor or function/], ['a\x01b\r', /Ctrl-A/],
  ] as const) {
    const { g, lines } = gate();
    g.scan(b(keys));
    // (A control key the gate cannot follow is a decision point too: the last decision is the Enter's.)
    assert.equal(lines.at(-1)!.text, null, JSON.stringify(keys));
    assert.match(lines.at(-1)!.why!, why);
    g.scan(b('pwd\r'));
    assert.equal(lines.at(-1)!.text, 'pwd');
  }
});

test('a bracketed paste keeps its newlines inside one line, run at the Enter after it; each pasted newline is decided too', () => {
  const { g, lines } = gate();
  assert.equal(g.scan(b('\x1b[200~echo a\nrm -rf /\x1b[201~')), null);
  g.scan(b('\r'));
  // At the pasted newline (what a program unaware of bracketed paste would run), then at Enter.
  assert.deepEqual(lines.map((l) => l.text), ['echo a\n', 'echo a\nrm -rf /']);
});

test('paste markers cannot hide a line: a newline inside a paste that a program would run is stopped when refused', () => {
  const { g, lines } = gate((l) => (l.text ?? '').includes('rm -rf'));
  const chunk = b('\x1b[200~rm -rf /x\rdate\r');
  const stop = g.scan(chunk)!;
  assert.equal(stop.at, chunk.indexOf('\rdate'));
  assert.equal(stop.line.text, 'rm -rf /x\n');
  assert.equal(g.scan(chunk, stop.at + 1), null);
  assert.deepEqual(lines.map((l) => l.text), ['rm -rf /x\n', 'date\n']);
});

test('Ctrl-C after an unreadable edit starts a readable line again, Ctrl-U does not (the cursor may have moved); an over-long line is unreadable', () => {
  const { g, lines } = gate();
  g.scan(b('\x1b[Aoops\x03ls\r'));
  g.scan(b('echo x\x1b[D\x15rm\r'));
  g.scan(b(`${'x'.repeat(20_000)}\r`));
  assert.equal(lines[0]!.text, 'ls');
  assert.equal(lines[1]!.text, null);
  assert.equal(lines[2]!.text, null);
  assert.match(lines[2]!.why!, /longer than/);
});

test('a Tab inside a bracketed paste is text, outside it is completion', () => {
  const { g, lines } = gate();
  g.scan(b('\x1b[200~printf "a\tb"\x1b[201~\r'));
  g.scan(b('ls\t\r'));
  assert.equal(lines[0]!.text, 'printf "a\tb"');
  assert.equal(lines[1]!.text, null);
});

test('keys that can run a line without an Enter are decision points: Ctrl-D (cooked mode), Ctrl-O (readline), a control key inside an escape sequence; Ctrl-V Ctrl-C keeps the line', () => {
  const refuse = (l: SubmittedLine) => l.text === null || (l.text ?? '').startsWith('rm');
  for (const [keys, at] of [['rm x\x04', 4], ['rm x\x0f', 4], ['rm x\x1b\r', 5], ['rm x\x1b[\n', 6], ['echo \x1b[1\r', 8]] as const) {
    const { g } = gate(refuse);
    const stop = g.scan(b(keys));
    assert.ok(stop, JSON.stringify(keys));
    assert.equal(stop.at, at, JSON.stringify(keys));
  }
  // Ctrl-D alone leaves a readable line readable; an allowed line goes on.
  const { g, lines } = gate(refuse);
  assert.equal(g.scan(b('echo a\x04b\r')), null);
  assert.equal(lines.at(-1)!.text, 'echo ab');
  // Ctrl-V Ctrl-C: the ^C is literal, the line is not dropped.
  const v = gate(refuse);
  const chunk = b('echo x;\x16\x03\r');
  const stop = v.g.scan(chunk);
  assert.ok(stop);
  assert.equal(stop.at, chunk.length - 1);
  assert.equal(stop.line.text, null);
  assert.match(stop.line.why!, /Ctrl-V/);
});

test('Backspace, Ctrl-U and Ctrl-W inside a bracketed paste make the line unreadable (readline inserts them as text)', () => {
  for (const key of ['\x7f', '\x08', '\x15', '\x17']) {
    const { g, lines } = gate();
    g.scan(b(`\x1b[200~echo hi;rm -rf /x;${key}\x1b[201~\r`));
    assert.equal(lines.at(-1)!.text, null, JSON.stringify(key));
    assert.match(lines.at(-1)!.why!, /pasted/);
  }
});

test('text before a Ctrl-C counts with the line at Enter (a shell that ignores SIGINT keeps it); Backspace reaches into it, Ctrl-U clears it', () => {
  const refuse = (l: SubmittedLine) => (l.text ?? '').includes('touch');
  const split = gate(refuse);
  const stop = split.g.scan(b('tou\x03ch f\r'));
  assert.ok(stop);
  assert.equal(stop.line.text, 'touch f');
  assert.match(stop.verdict.reason, /before Ctrl-C/);
  // After the refusal (Ctrl-E Ctrl-U empties the shell's line) nothing is kept.
  assert.equal(split.g.scan(b('ch f\r')), null);
  const fine = gate(refuse);
  assert.equal(fine.g.scan(b('echo a\x03ls\r')), null);
  assert.deepEqual(fine.lines.map((l) => l.text), ['ls', 'echo als']);
  const erased = gate(refuse);
  assert.equal(erased.g.scan(b('touch\x03\x7f\x7f\x7f\x7f\x7fls\r')), null);
  const killed = gate(refuse);
  assert.equal(killed.g.scan(b('tou\x03\x15ch f\r')), null);
});
