// Input through the gateway reaches the target as it does over direct ssh, and the recording says
// what arrived: a script piped into a shell without a pty runs whole before the shell sees EOF
// (`ssh gw < script.sh`, `ssh -T`), piped input on a pty ends as it does directly (`ssh -tt`).
// stdin of a command without a pty is recorded (sample, size, SHA-256); an interpreter's stdin
// (`ssh gw bash < deploy.sh`) is recorded chunk by chunk, each durable before the target runs it:
// the script itself asks the gateway's API whether its line is on record yet.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeEvents, eventsOf, oneEvent, recordOne, runSshRaw, sha256, startSsh, startSshWorld, waitForRecording, sessionIds, type Data, type SshWorld } from './helpers.ts';

let w: SshWorld;
/** A program the target runs to ask the gateway's API whether a text is on record (committed) yet. */
let check = '';

before(async () => {
  w = await startSshWorld();
  check = join(w.work, 'check.mjs');
  writeFileSync(check, `
const headers = { authorization: 'Bearer ${w.gw.adminToken}' };
const get = async (p) => (await fetch('${w.gw.url}' + p, { headers })).json();
const needle = process.argv[2];
let seen = false;
for (const s of await get('/api/v1/sessions?limit=10000')) {
  if (s.endedAt !== null) continue;
  const rec = await get('/api/v1/sessions/' + s.id);
  seen ||= rec.events.some((e) => e.type === 'ssh.stdin' && String(e.data.d).includes(needle));
}
console.log(needle + (seen ? ' on-record' : ' NOT-on-record'));
`);
});

after(async () => {
  await w?.stop();
});

const joinedIn = (rec: { events: Array<{ type: string; data: Record<string, unknown> }> }, ch = 1) =>
  eventsOf(rec as never, 'term.in').filter((e) => e.data.ch === ch).map((e) => String(e.data.d)).join('');

describe('input piped through the gateway', () => {
  for (const variant of [{ name: 'ssh gw < script.sh', extra: [] as string[] }, { name: 'ssh -T gw', extra: ['-T'] }]) {
    it(`${variant.name}: the script runs on the target as over direct ssh, and is recorded as delivered`, async () => {
      const marker = join(w.work, `ran-${variant.extra.length}`);
      rmSync(marker, { force: true });
      const script = `echo hi; id -un\ntouch '${marker}'\necho done-$((6*7))\n`;
      const direct = await runSshRaw(w.direct({ extra: variant.extra }), undefined, script);
      assert.equal(direct.code, 0, direct.stderr);
      assert.ok(existsSync(marker), 'the direct run created the marker');
      rmSync(marker);
      const { rec, result } = await recordOne(w.gw, () => runSshRaw(w.opts({ extra: variant.extra }), undefined, script));
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout.toString(), direct.stdout.toString(), 'same output as direct ssh');
      assert.match(result.stdout.toString(), /^hi\n.+\ndone-42\n$/);
      assert.ok(existsSync(marker), 'the script ran on the target');
      assert.equal(joinedIn(rec), script, describeEvents(rec));
      assert.deepEqual(eventsOf(rec, 'ssh.input.undelivered'), [], 'nothing undelivered');
      assert.equal(eventsOf(rec, 'ssh.exit')[0]?.data.code, 0);
    });
  }

  it("printf 'hi\\n' | ssh -tt gw 'read x; echo $x' prints hi and exits, as direct ssh does", async () => {
    const direct = await runSshRaw(w.direct({ extra: ['-tt'] }), 'read x; echo got-$x', 'hi\n', 20_000);
    assert.equal(direct.code, 0, direct.stderr);
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(w.opts({ extra: ['-tt'] }), 'read x; echo got-$x', 'hi\n', 20_000));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout.toString(), /got-hi\r\n/);
    assert.match(direct.stdout.toString(), /got-hi\r\n/);
    assert.equal(joinedIn(rec), 'hi\n');
    assert.deepEqual(eventsOf(rec, 'ssh.input.undelivered'), []);
  });

  it('ssh gw bash < deploy.sh: the script runs, and its content is recorded (ssh.stdin and a sample with size and SHA-256 in ssh.exit)', async () => {
    const dir = join(w.work, 'deploy');
    rmSync(dir, { recursive: true, force: true });
    const script = `mkdir -p '${dir}'\necho deployed > '${dir}/marker'\n${process.execPath} '${check}' DEPLOY-LINE-3\necho done\n`;
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(w.opts(), 'bash', script));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(readFileSync(join(dir, 'marker'), 'utf8'), 'deployed\n', 'the script ran on the target');
    assert.equal(result.stdout.toString(), 'DEPLOY-LINE-3 on-record\ndone\n', 'the line was on record before bash ran it');
    assert.equal(eventsOf(rec, 'ssh.stdin').map((e) => String(e.data.d)).join(''), script, describeEvents(rec));
    const exit = oneEvent(rec, 'ssh.exit');
    const stdin = exit.stdin as Data;
    assert.deepEqual({ bytes: stdin.bytes, sha256: stdin.sha256, sample: stdin.sample, truncated: stdin.truncated },
      { bytes: Buffer.byteLength(script), sha256: sha256(script), sample: script, truncated: false });
    assert.equal(exit.stdinBytes, Buffer.byteLength(script));
    assert.ok(eventsOf(rec, 'ssh.exec')[0]!.seq < eventsOf(rec, 'ssh.stdin')[0]!.seq, 'the command, then its input');
  });

  it("echo 'rm -rf DIR' | ssh gw sh: runs, and the command is in the recording", async () => {
    const dir = join(w.work, 'to-remove');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(w.opts(), 'sh', `rm -rf '${dir}'\n`));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(existsSync(dir), false, 'sh ran the command');
    assert.deepEqual(eventsOf(rec, 'ssh.stdin').map((e) => e.data.d), [`rm -rf '${dir}'\n`]);
  });

  it('an interpreter fed line by line: each line is on record before the target runs it', async () => {
    const beforeIds = await sessionIds(w.gw);
    const ssh = startSsh(w.opts(), 'bash');
    try {
      for (const n of [1, 2, 3]) {
        ssh.child.stdin!.write(`${process.execPath} '${check}' FED-LINE-${n}\n`);
        await ssh.waitForStdout(`FED-LINE-${n} `);
      }
      ssh.child.stdin!.end();
      assert.equal((await ssh.exited).code, 0, ssh.stderr());
    } finally {
      await ssh.stop();
    }
    assert.equal(ssh.stdout(), 'FED-LINE-1 on-record\nFED-LINE-2 on-record\nFED-LINE-3 on-record\n');
    const rec = await waitForRecording(w.gw, beforeIds, (r) => r.session.endedAt !== null);
    assert.equal(eventsOf(rec, 'ssh.stdin').length, 3, describeEvents(rec));
  });

  it('stdin of a command that is not an interpreter is sampled, counted and hashed, not held line by line', async () => {
    const file = join(w.work, 'uploaded.bin');
    const input = randomBytes(200 * 1024);
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(w.opts(), `cat > '${file}'`, input));
    assert.equal(result.code, 0, result.stderr);
    assert.ok(readFileSync(file).equals(input), 'the content arrived intact');
    assert.deepEqual(eventsOf(rec, 'ssh.stdin'), []);
    const stdin = oneEvent(rec, 'ssh.exit').stdin as Data;
    assert.equal(stdin.bytes, input.length);
    assert.equal(stdin.sha256, sha256(input));
    assert.equal(stdin.truncated, true);
    assert.equal(stdin.encoding, 'base64');
    const sample = Buffer.from(String(stdin.sample), 'base64');
    assert.ok(sample.length > 0 && sample.equals(input.subarray(0, sample.length)), 'the sample is the start of stdin');
  });
});
