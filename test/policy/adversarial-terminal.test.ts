// Adversarial terminal input against the line gate, with a real sshd and OpenSSH `ssh -tt`: keys
// that make a shell (bash's readline, or a terminal in cooked mode running `sh`) run a line without
// the Enter the gate decides at. Each case types a denied `touch FILE` with a trick and checks the
// target's file system: the file must not appear.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { generateClientKey, type ClientKey } from '../support/sshd.ts';
import { sshArgs, type SshOptions } from '../support/ssh-client.ts';
import { clientEnv, startSshWorld, sleep, type SshWorld } from '../ssh/helpers.ts';

let w: SshWorld;
let bot: ClientKey;
let remote = '';

before(async () => {
  w = await startSshWorld();
  remote = join(w.work, 'remote');
  mkdirSync(remote);
  bot = await generateClientKey(w.work, 'ed25519', 'bot_ed25519');
  await w.gw.cliOk(['identity', 'add', 'bot', '--kind', 'agent']);
  await w.gw.cliOk(['key', 'add', 'bot', `${bot.privateKeyFile}.pub`]);
  await w.gw.cliOk(['grant', 'bot', 'box']);
  const file = join(w.work, 'policy.yaml');
  writeFileSync(file, 'rules:\n  - name: no-touch\n    exec: { programs: [touch] }\n    action: deny\n');
  await w.gw.cliOk(['policy', 'apply', file]);
});

after(async () => {
  await w?.stop();
});

/** `ssh -tt` typing each step (once the prompt shows) after a pause (so keys reach the shell as separate reads); killed after `lingerMs`. */
function typeInto(command: string | undefined, steps: string[], lingerMs = 1500): Promise<string> {
  const opts: SshOptions = { ...w.opts(), identityFile: bot.privateKeyFile };
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', [...sshArgs(opts), '-tt', `${opts.user}@127.0.0.1`, ...(command ? ['--', command] : [])], { env: clientEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString('latin1'); });
    child.stderr.on('data', (c: Buffer) => { out += c.toString('latin1'); });
    child.on('error', reject);
    child.stdin.on('error', () => {});
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', () => { clearTimeout(timer); resolve(out); });
    void (async () => {
      // The shell's prompt: typed before it, keys meet the terminal's cooked mode, not readline.
      for (let waited = 0; !/[#$] $/.test(out.replace(/\x1b\[\?2004[hl]/g, '')) && waited < 15_000; waited += 50) await sleep(50);
      await sleep(200);
      for (const s of steps) {
        child.stdin.write(s);
        await sleep(400);
      }
      await sleep(lingerMs);
      child.kill('SIGTERM');
    })();
  });
}

const cases: Array<{ name: string; command?: string; steps: (f: string) => string[] }> = [
  // A C0 control inside an escape sequence is executed by the terminal, not part of the sequence.
  { name: 'ESC CR in a cooked-mode sh', command: 'sh', steps: (f) => [`touch ${f} \x1b\r`, 'exit\r'] },
  { name: 'ESC [ CR in bash', steps: (f) => [`touch ${f} \x1b[\r`, '\x03', 'exit\r'] },
  { name: 'ESC [ LF in a cooked-mode sh', command: 'sh', steps: (f) => [`touch ${f} \x1b[\n`, 'exit\r'] },
  // readline's operate-and-get-next runs the line.
  { name: 'Ctrl-O in bash', steps: (f) => [`touch ${f}\x0f`, '\x03', 'exit\r'] },
  // Cooked mode: Ctrl-D hands the line to sh; a second Ctrl-D is end of input, and sh runs it.
  { name: 'Ctrl-D Ctrl-D in a cooked-mode sh', command: 'sh', steps: (f) => [`touch ${f}`, '\x04', '\x04'] },
  // Cooked mode: Ctrl-V makes the next key literal, so Ctrl-V Ctrl-C does not drop the line.
  { name: 'Ctrl-V Ctrl-C in a cooked-mode sh', command: 'sh', steps: (f) => [`touch ${f};`, '\x16\x03', '\r', 'exit\r'] },
  // readline inserts a bracketed paste as it is: editing keys inside it are text, not edits.
  { name: 'Ctrl-U inside a bracketed paste in bash', steps: (f) => [`\x1b[200~touch ${f} ;\x15\x1b[201~`, '\r', 'exit\r'] },
  { name: 'Backspace inside a bracketed paste in bash', steps: (f) => [`\x1b[200~echo hi;touch ${f};${'\x7f'.repeat(`touch ${f};`.length)}\x1b[201~`, '\r', 'exit\r'] },
  { name: 'Ctrl-W inside a bracketed paste in bash', steps: (f) => [`\x1b[200~echo hi;touch ${f};\x17\x17\x1b[201~`, '\r', 'exit\r'] },
  // A shell that ignores SIGINT keeps its line at Ctrl-C.
  { name: "Ctrl-C after trap '' INT in bash", steps: (f) => ["trap '' INT\r", `touch ${f}`, '\x03', '\r', 'exit\r'] },
];

for (const [i, c] of cases.entries()) {
  test(`terminal: a denied line does not run through ${c.name}`, { timeout: 40_000 }, async () => {
    const f = join(remote, `evasion-${i}`);
    const shown = await typeInto(c.command, c.steps(f));
    if (process.env.ADV_DEBUG) console.log(c.name, JSON.stringify(shown.slice(0, 400)));
    assert.equal(existsSync(f), false, `${c.name} ran the denied line; the client saw: ${JSON.stringify(shown.slice(-600))}`);
  });
}

test('terminal: plain typing still works after the cases above (the gate is not just refusing everything)', { timeout: 40_000 }, async () => {
  const f = join(remote, 'plain');
  await typeInto('sh', [`echo ok > ${f}\r`, 'exit\r']);
  assert.equal(existsSync(f), true);
});
