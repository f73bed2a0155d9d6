// Interactive shells through the gateway, driven in a real terminal (tmux): typed commands and
// their output, window resizes, a full-screen program, Ctrl-C, the exit status, and what the
// recording holds (the shell request with its pty, typed input before the output it caused,
// output, resizes). Also prints the keystroke echo latency through the gateway vs direct.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sshArgs, type SshOptions } from '../support/ssh-client.ts';
import { startTerminal, type Terminal } from '../support/terminal.ts';
import { run } from '../support/processes.ts';
import { clientEnv, describeEvents, eventsOf, newRecordings, oneEvent, sessionIds, sleep, startSshWorld, waitForRecording, type Recording, type SshWorld } from './helpers.ts';

let w: SshWorld;
const TERM = 'xterm-256color';

before(async () => {
  w = await startSshWorld();
});

after(async () => {
  await w?.stop();
});

/** A shell in tmux: `ssh -tt` through the gateway (or `direct` to the target). */
async function openShell(o: { cols?: number; rows?: number; direct?: boolean; connection?: string } = {}): Promise<Terminal> {
  const opts: SshOptions = o.direct ? w.direct() : w.opts({ connection: o.connection });
  const term = await startTerminal({
    command: ['ssh', '-tt', ...sshArgs(opts), `${opts.user}@127.0.0.1`],
    cols: o.cols ?? 80, rows: o.rows ?? 24, term: TERM,
    env: clientEnv(),
  });
  // A marker only the shell's output can contain (the typed line reads SHELL-$((40+2))).
  await term.send('echo SHELL-$((40+2))\n');
  await term.waitFor('SHELL-42', 15_000);
  return term;
}

/** Runs `fn` with a fresh shell and returns the session's recording once it has ended. */
async function recordShell(o: { cols?: number; rows?: number }, fn: (t: Terminal) => Promise<void>): Promise<Recording> {
  const beforeIds = await sessionIds(w.gw);
  const term = await openShell(o);
  try {
    await fn(term);
  } finally {
    await term.kill();
  }
  const recs = await newRecordings(w.gw, beforeIds, 1);
  assert.equal(recs.length, 1, 'one session recorded');
  return recs[0]!;
}

const termIn = (rec: Recording) => eventsOf(rec, 'term.in');
const termOut = (rec: Recording) => eventsOf(rec, 'term.out');
const allOut = (rec: Recording) => termOut(rec).map((e) => String(e.data.d)).join('');
const allIn = (rec: Recording) => termIn(rec).map((e) => String(e.data.d)).join('');

/** seq of the first event of `type` whose accumulated text (from the start) contains `needle`. */
function seqWhereSeen(rec: Recording, type: string, needle: string): number {
  let acc = '';
  for (const e of eventsOf(rec, type)) {
    acc += String(e.data.d);
    if (acc.includes(needle)) return e.seq;
  }
  assert.fail(`${JSON.stringify(needle)} never appears in ${type}`);
}

describe('interactive shell through the gateway', () => {
  it('runs typed commands, hands on `exit 7`, and records the shell, input before output, and output', async () => {
    let status: number | null = null;
    const rec = await recordShell({ cols: 100, rows: 30 }, async (t) => {
      await t.send('echo typed-$((6*7))-done\n');
      await t.waitFor('typed-42-done');
      await t.send('printf "%s\\n" alpha beta | tr a-z A-Z\n');
      await t.waitFor('BETA');
      await t.send('exit 7\n');
      status = await t.waitExit(15_000);
    });
    assert.equal(status, 7, 'the local ssh exits with the remote shell\'s status');

    const shell = oneEvent(rec, 'ssh.shell');
    assert.deepEqual(shell.pty, { term: TERM, cols: 100, rows: 30 });
    assert.equal(rec.session.endReason, 'client disconnected');
    assert.equal(oneEvent(rec, 'ssh.exit').code, 7);

    const input = allIn(rec);
    for (const typed of ['echo typed-$((6*7))-done\r', 'printf "%s\\n" alpha beta | tr a-z A-Z\r', 'exit 7\r']) {
      assert.ok(input.includes(typed), `term.in holds ${JSON.stringify(typed)}; got ${JSON.stringify(input)}`);
    }
    const output = allOut(rec);
    assert.ok(output.includes('typed-42-done'), 'term.out holds the output');
    assert.ok(output.includes('ALPHA\r\nBETA'), 'term.out holds the pipeline output');
    // The command is on record before the output it caused.
    assert.ok(seqWhereSeen(rec, 'term.in', 'echo typed-$((6*7))-done\r') < seqWhereSeen(rec, 'term.out', 'typed-42-done'), describeEvents(rec));
    assert.ok(seqWhereSeen(rec, 'term.in', 'tr a-z A-Z\r') < seqWhereSeen(rec, 'term.out', 'ALPHA'));
    assert.ok(oneEvent(rec, 'ssh.shell') && rec.events.findIndex((e) => e.type === 'ssh.shell') < rec.events.findIndex((e) => e.type === 'term.in'));
  });

  it('follows a window resize: `stty size` sees it and term.resize is recorded', async () => {
    const beforeIds = await sessionIds(w.gw);
    const rec = await recordShell({ cols: 80, rows: 24 }, async (t) => {
      await t.send('echo "S1=$(stty size)=Z"\n');
      await t.waitFor('S1=24 80=Z');
      await t.resize(132, 43);
      // Wait until the gateway has seen the window change (it forwards it at the same time).
      await waitForRecording(w.gw, beforeIds, (r) => eventsOf(r, 'term.resize').length > 0);
      await t.send('echo "S2=$(stty size)=Z"\n');
      await t.waitFor('S2=43 132=Z');
      await t.send('exit\n');
      await t.waitExit();
    });
    const resizes = eventsOf(rec, 'term.resize');
    assert.deepEqual(resizes.at(-1)?.data, { ch: 1, cols: 132, rows: 43 }, JSON.stringify(resizes));
    const resizeSeq = resizes.find((e) => e.data.cols === 132 && e.data.rows === 43)!.seq;
    assert.ok(seqWhereSeen(rec, 'term.out', 'S1=24 80=Z') < resizeSeq, 'the resize is recorded in its place in the stream');
    assert.ok(resizeSeq < seqWhereSeen(rec, 'term.in', 'S2='), 'resize recorded before the command that observed it');
    assert.ok(allOut(rec).includes('S2=43 132=Z'));
  });

  it('runs a full-screen program (less) and records its escape sequences', async () => {
    const file = join(w.work, 'pager.txt');
    writeFileSync(file, Array.from({ length: 300 }, (_, i) => `pager line ${i + 1}`).join('\n') + '\n');
    const rec = await recordShell({ cols: 80, rows: 24 }, async (t) => {
      await t.send(`less ${file}\n`);
      const screen = await t.waitFor('pager line 23');
      assert.ok(!screen.includes('pager line 30'), 'less shows one screenful');
      await t.send(' '); // next page
      await t.waitFor('pager line 40');
      await t.send('q');
      await t.send('echo LESS-$((1+1))-QUIT\n');
      await t.waitFor('LESS-2-QUIT');
      await t.send('exit\n');
      await t.waitExit();
    });
    const out = allOut(rec);
    // xterm's alternate screen (smcup/rmcup), which less enters and leaves.
    assert.ok(out.includes('\x1b[?1049h'), 'alternate screen entered');
    assert.ok(out.includes('\x1b[?1049l'), 'alternate screen left');
    assert.ok(out.indexOf('\x1b[?1049h') < out.indexOf('pager line 1\r'));
    assert.ok(out.includes('pager line 40'));
    assert.ok(allIn(rec).includes(' '), 'paging key recorded');
    assert.ok(allIn(rec).includes('q'), 'quit key recorded');
  });

  it('edits a file with vi through the gateway', async () => {
    const file = join(w.work, 'edited.txt');
    writeFileSync(file, 'first line\n');
    const rec = await recordShell({ cols: 80, rows: 24 }, async (t) => {
      await t.send(`vi ${file}\n`);
      await t.waitFor('first line');
      await sleep(200); // let vi finish drawing before keys arrive
      await t.send('Gogatehouse was here');
      await t.sendKeys('Escape');
      await t.send(':wq\n');
      // Keys typed before vi has exited would go to vi.
      await waitForProcess(`vi ${file}`, false);
      await t.send('echo VI-$((2+2))-DONE\n');
      await t.waitFor('VI-4-DONE');
      await t.send('exit\n');
      await t.waitExit();
    });
    assert.equal(readFileSync(file, 'utf8'), 'first line\ngatehouse was here\n');
    assert.ok(allIn(rec).includes('Gogatehouse was here\x1b:wq\r'), JSON.stringify(allIn(rec)));
    assert.ok(allOut(rec).includes('gatehouse was here'), 'the edit is in term.out');
  });

  it('interrupts `sleep` with Ctrl-C through the pty', async () => {
    const marker = 4242 + process.pid % 1000; // a sleep duration nobody else uses
    let elapsed = 0;
    const rec = await recordShell({}, async (t) => {
      await t.send(`sleep ${marker}\n`);
      await waitForProcess(`sleep ${marker}`, true);
      const t0 = Date.now();
      await t.sendKeys('C-c');
      await t.send('echo "RC=$?=Z"\n');
      await t.waitFor('RC=130=Z');
      elapsed = Date.now() - t0;
      await waitForProcess(`sleep ${marker}`, false);
      await t.send('exit\n');
      await t.waitExit();
    });
    assert.ok(elapsed < 10_000, `interrupted after ${elapsed} ms`);
    assert.ok(allIn(rec).includes('\x03'), 'Ctrl-C recorded as typed input');
    assert.ok(seqWhereSeen(rec, 'term.in', '\x03') < seqWhereSeen(rec, 'term.out', 'RC=130=Z'));
  });

  it('keystroke echo latency through the gateway vs direct (diagnostic)', async (t) => {
    const measure = async (direct: boolean, connection?: string): Promise<number[]> => {
      const term = await openShell({ direct, connection });
      try {
        const times: number[] = [];
        for (let i = 0; i < 15; i++) {
          // A comment: echoed by the line editor, harmless when Enter is pressed.
          times.push(await term.measureEcho(`#k${i}q`, `#k${i}q`));
          await term.send('\n');
        }
        await term.send('exit\n');
        await term.waitExit();
        return times;
      } finally {
        await term.kill();
      }
    };
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    await w.addConnection('box-latency-best-effort', ['--recording', 'best-effort']);
    const direct = await measure(true);
    const via = await measure(false);
    const viaBestEffort = await measure(false, 'box-latency-best-effort');
    t.diagnostic(`echo latency median: direct ${median(direct).toFixed(1)} ms, through gateway ${median(via).toFixed(1)} ms ` +
      `(durable: each keystroke committed before it is forwarded), best-effort connection ${median(viaBestEffort).toFixed(1)} ms ` +
      `(max ${Math.max(...direct).toFixed(1)} / ${Math.max(...via).toFixed(1)} / ${Math.max(...viaBestEffort).toFixed(1)} ms; includes tmux polling)`);
    assert.ok(median(via) < 500, `median echo latency through the gateway ${median(via)} ms`);
  });
});

/** Waits until a process whose command line is exactly `cmdline` exists (or is gone). */
async function waitForProcess(cmdline: string, present: boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await run('pgrep', ['-x', '-f', cmdline]);
    if ((r.code === 0) === present) return;
    if (Date.now() > deadline) assert.fail(`process "${cmdline}" ${present ? 'did not start' : 'is still running'}`);
    await sleep(50);
  }
}
