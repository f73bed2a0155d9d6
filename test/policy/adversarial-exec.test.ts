// Adversarial exec commands against a deny rule on a program, with a real sshd and OpenSSH: shell
// reserved words before a command (`! cmd`, `if …; then cmd`, `while cmd`, `do cmd`), `sh -c --
// 'cmd'`, and wrappers that run the command in their arguments (setsid, flock, su -c, runuser,
// script -c, taskset, unshare). Each case asserts the client's error and that the target did not
// run it (the file does not appear).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { runSshRaw, startSshWorld, type SshWorld } from '../ssh/helpers.ts';

let w: SshWorld;
let remote = '';

before(async () => {
  w = await startSshWorld();
  remote = join(w.work, 'remote');
  mkdirSync(remote);
  const file = join(w.work, 'policy.yaml');
  writeFileSync(file, 'rules:\n  - name: no-touch\n    exec: { programs: [touch] }\n    action: deny\n');
  await w.gw.cliOk(['policy', 'apply', file]);
});

after(async () => {
  await w?.stop();
});

const cases: Array<(m: string) => string> = [
  (m) => `! touch ${m}`,
  (m) => `if true; then touch ${m}; fi`,
  (m) => `if touch ${m}; then :; fi`,
  (m) => `if false; then :; else touch ${m}; fi`,
  (m) => `while touch ${m}; do break; done`,
  (m) => `until touch ${m}; do :; done`,
  (m) => `for x in 1; do touch ${m}; done`,
  (m) => `sh -c -- 'touch ${m}'`,
  (m) => `sh -e -c 'touch ${m}'`,
  (m) => `sh -c -e 'touch ${m}'`,
  (m) => `setsid touch ${m}`,
  (m) => `setsid -w touch ${m}`,
  (m) => `flock ${m}.lock touch ${m}`,
  (m) => `flock ${m}.lock -c 'touch ${m}'`,
  (m) => `su root -c 'touch ${m}'`,
  (m) => `runuser -u root -- touch ${m}`,
  (m) => `script -qc 'touch ${m}' /dev/null`,
  (m) => `taskset 1 touch ${m}`,
  (m) => `unshare touch ${m}`,
];

test('exec evasions with reserved words, sh -c --, and more wrappers: nothing runs', { timeout: 120_000 }, async () => {
  const ran: string[] = [];
  for (const [i, make] of cases.entries()) {
    const marker = join(remote, `adv-${i}`);
    const command = make(marker);
    const r = await runSshRaw(w.opts(), command);
    if (existsSync(marker) || r.code !== 1 || !/gatehouse: .*(rule "no-touch"|could apply)/.test(r.stderr)) ran.push(`${command} (exit ${r.code}, ran: ${existsSync(marker)})`);
  }
  assert.deepEqual(ran, [], 'these were not refused');
});

test('the same words still run what is allowed', { timeout: 60_000 }, async () => {
  const out = join(remote, 'allowed');
  const r = await runSshRaw(w.opts(), `if true; then echo ok > ${out}; fi; ! false && setsid true && sh -c -- 'true'`);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(existsSync(out), true);
});
