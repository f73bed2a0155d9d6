// Input through the gateway reaches the target as it does over direct ssh, and the recording says
// what arrived: a script piped into a shell without a pty runs whole before the shell sees EOF
// (`ssh gw < script.sh`, `ssh -T`), piped input on a pty ends as it does directly (`ssh -tt`).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describeEvents, eventsOf, recordOne, runSshRaw, startSshWorld, type SshWorld } from './helpers.ts';

let w: SshWorld;

before(async () => {
  w = await startSshWorld();
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
});
