// Commands run with `ssh gateway CMD` (exec channels): output relayed byte for byte and recorded
// with its size and hash, exit statuses and signals handed on, stderr kept apart, stdin counted,
// the environment filtered by the connection's policy, best-effort recording.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { runSsh } from '../support/ssh-client.ts';
import { eventsOf, oneEvent, recordOne, runSshRaw, sha256, startSshWorld, describeEvents, type Data, type SshWorld } from './helpers.ts';

let w: SshWorld;

before(async () => {
  // The target accepts any variable, so that what arrives there is what the gateway let through.
  w = await startSshWorld({ sshd: { config: { AcceptEnv: '*' } } });
});

after(async () => {
  await w?.stop();
});

describe('ssh exec through the gateway', () => {
  it('relays 20 MB of output intact and records its size and hash with a truncated sample', async () => {
    const size = 20 * 1024 * 1024;
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(w.opts(), `head -c ${size} /dev/urandom`));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.length, size);
    const exec = oneEvent(rec, 'ssh.exec');
    assert.equal(exec.command, `head -c ${size} /dev/urandom`);
    assert.equal(exec.pty, null);
    const exit = oneEvent(rec, 'ssh.exit');
    assert.equal(exit.code, 0);
    const stdout = exit.stdout as Data;
    assert.equal(stdout.bytes, size);
    assert.equal(stdout.sha256, sha256(result.stdout));
    assert.equal(stdout.truncated, true);
    // The sample is the start of the output (random bytes: base64).
    assert.equal(stdout.encoding, 'base64');
    const sample = Buffer.from(stdout.sample as string, 'base64');
    assert.ok(sample.length > 0 && sample.length < size, `sample of ${sample.length} bytes`);
    assert.ok(sample.equals(result.stdout.subarray(0, sample.length)), 'the sample is the first bytes of the output');
    assert.equal(seqOf(rec, 'ssh.exec') < seqOf(rec, 'ssh.exit'), true);
    assert.equal(rec.session.endReason, 'client disconnected');
  });

  it('hands on a non-zero exit status and records it', async () => {
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts(), 'echo before; exit 42'));
    assert.equal(result.code, 42, result.stderr);
    assert.equal(result.stdout, 'before\n');
    const exit = oneEvent(rec, 'ssh.exit');
    assert.equal(exit.code, 42);
    assert.equal(exit.signal, null);
    assert.equal((exit.stdout as Data).sample, 'before\n');
  });

  it('keeps stderr apart from stdout, on the client and in the recording', async () => {
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts(), 'echo to-out; echo to-err >&2; echo more-out'));
    assert.equal(result.code, 0);
    assert.equal(result.stdout, 'to-out\nmore-out\n');
    assert.equal(result.stderr, 'to-err\n');
    const exit = oneEvent(rec, 'ssh.exit');
    assert.equal((exit.stdout as Data).sample, 'to-out\nmore-out\n');
    assert.equal((exit.stdout as Data).truncated, false);
    assert.equal((exit.stderr as Data).sample, 'to-err\n');
    assert.equal((exit.stderr as Data).bytes, 7);
  });

  it('relays piped stdin and records how many bytes came in', async () => {
    const input = randomBytes(3 * 1024 * 1024 + 17);
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(w.opts(), 'cat', input));
    assert.equal(result.code, 0, result.stderr);
    assert.ok(result.stdout.equals(input), `echoed ${result.stdout.length} of ${input.length} bytes intact`);
    const exit = oneEvent(rec, 'ssh.exit');
    assert.equal(exit.stdinBytes, input.length);
    assert.equal((exit.stdout as Data).bytes, input.length);
    assert.equal((exit.stdout as Data).sha256, sha256(input));
  });

  it('hands on an exit by signal (ssh exits 255) and records the signal', async () => {
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts(), 'echo dying; kill -TERM $$; echo not-reached'));
    assert.equal(result.code, 255, `code ${result.code}, stderr: ${result.stderr}`);
    assert.equal(result.stdout, 'dying\n');
    // Direct to the target OpenSSH behaves the same (so the check above means what it says).
    const direct = await runSsh(w.direct(), 'kill -TERM $$');
    assert.equal(direct.code, 255);
    const exit = oneEvent(rec, 'ssh.exit');
    assert.equal(exit.code, null);
    assert.match(String(exit.signal), /^(SIG)?TERM$/);
  });

  it('passes LANG and LC_*, refuses other variables and records the refusal', async () => {
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts({
      extra: ['-o', 'SetEnv=LANG=C.UTF-8 LC_GATEHOUSE=lc-value FOO=bar'],
    }), 'echo "[$LANG|$LC_GATEHOUSE|${FOO-unset}]"'));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, '[C.UTF-8|lc-value|unset]\n');
    const exec = oneEvent(rec, 'ssh.exec');
    assert.deepEqual(exec.env, { LANG: 'C.UTF-8', LC_GATEHOUSE: 'lc-value' });
    const refused = oneEvent(rec, 'ssh.env.refused');
    assert.equal(refused.name, 'FOO');
    assert.ok(seqOf(rec, 'ssh.env.refused') < seqOf(rec, 'ssh.exec'), describeEvents(rec));

    // Control: the target itself would have taken FOO (AcceptEnv *), and a connection that allows it passes it on.
    const direct = await runSsh(w.direct({ extra: ['-o', 'SetEnv=FOO=bar'] }), 'echo "[${FOO-unset}]"');
    assert.equal(direct.stdout, '[bar]\n');
    await w.addConnection('box-env', ['--allow-env', 'FOO']);
    const allowed = await recordOne(w.gw, () => runSsh(w.opts({ connection: 'box-env', extra: ['-o', 'SetEnv=FOO=bar LANG=C.UTF-8'] }),
      'echo "[${FOO-unset}|${LANG-unset}]"'));
    assert.equal(allowed.result.stdout, '[bar|unset]\n', 'with --allow-env FOO only FOO passes');
    assert.deepEqual(oneEvent(allowed.rec, 'ssh.exec').env, { FOO: 'bar' });
    assert.equal(oneEvent(allowed.rec, 'ssh.env.refused').name, 'LANG');
  });

  it('runs a command with a pty (ssh -tt) and records its terminal output', async () => {
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts({ extra: ['-tt'] }), 'tty; echo pty-ok'));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^\/dev\/pts\/\d+\r\npty-ok\r\n$/);
    const exec = oneEvent(rec, 'ssh.exec');
    assert.ok(exec.pty, 'pty recorded');
    const out = eventsOf(rec, 'term.out').map((e) => e.data.d).join('');
    assert.match(out, /pty-ok/);
    assert.equal(oneEvent(rec, 'ssh.exit').code, 0);
  });

  it('works on a best-effort connection and records it as such', async () => {
    await w.addConnection('box-best-effort', ['--recording', 'best-effort']);
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts({ connection: 'box-best-effort' }), 'echo best-effort-ok; exit 3'));
    assert.equal(result.code, 3, result.stderr);
    assert.equal(result.stdout, 'best-effort-ok\n');
    assert.equal(rec.session.recording, 'best-effort');
    assert.equal(rec.session.connection, 'box-best-effort');
    assert.equal(oneEvent(rec, 'ssh.exec').command, 'echo best-effort-ok; exit 3');
    const exit = oneEvent(rec, 'ssh.exit');
    assert.equal(exit.code, 3);
    assert.equal((exit.stdout as Data).sample, 'best-effort-ok\n');
  });

  it('sessions show escapes the command: cursor moves cannot hide `touch` behind `uptime`, newlines cannot split or join commands', async () => {
    const ESC = '\x1b';
    const file = `${w.work}/escaped-touch`;
    // Raw on a terminal, this shows as `uptime`: the cursor goes back 27 columns and the line is erased.
    const hidden = `touch ${file}; #${ESC}[27D${ESC}[Kuptime`;
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts(), hidden));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(oneEvent(rec, 'ssh.exec').command, hidden, 'the recording keeps the exact command');
    const twoLines = 'echo one\necho two\r\u202e';
    const second = await recordOne(w.gw, () => runSsh(w.opts(), twoLines));
    assert.equal(second.result.stdout, 'one\ntwo\r\u202e\n');

    for (const r of [rec, second.rec]) {
      for (const sub of ['show', 'replay']) {
        const text = await w.gw.cliOk(['sessions', sub, r.session.id]);
        assert.ok(!/[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f\u202a-\u202e\u2066-\u2069]/.test(text), `sessions ${sub}: no raw control character: ${JSON.stringify(text)}`);
        const shown = r === rec ? String.raw`touch ${file}; #\x1b[27D\x1b[Kuptime` : String.raw`echo one\necho two\r\u202e`;
        assert.ok(text.split('\n').some((l) => /exec {5}\[ch \d+\] /.test(l) && l.endsWith(shown)), `sessions ${sub}: the escaped command: ${text}`);
      }
    }
  });
});

function seqOf(rec: { events: Array<{ seq: number; type: string }> }, type: string): number {
  const e = rec.events.find((x) => x.type === type);
  assert.ok(e, `no ${type} event`);
  return e.seq;
}
