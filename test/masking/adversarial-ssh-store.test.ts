// The store after SSH sessions that print secrets in ways the detectors used to miss, end to end
// with real ssh, sshd and tmux through the gateway: grep --color=always over a credentials file
// (the match is coloured: ESC[01;31mESC[K glued to the key), a key printed in two writes a second
// apart (the terminal recorder flushes what it holds after 500 ms), and the same over ssh exec.
// Then every file of the data directory (SQLite database, WAL and -shm included) is searched for
// each secret — raw, hex and base64 — and none is there. The client still sees every value.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { runSsh, sshArgs } from '../support/ssh-client.ts';
import { startTerminal } from '../support/terminal.ts';
import { clientEnv, eventsOf, newRecordings, recordOne, sessionIds, startSshWorld, type SshWorld } from '../ssh/helpers.ts';

let w: SshWorld;

const upper = (n: number) => [...randomBytes(n)].map((b) => 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'[b % 32]).join('');
const alnum = (n: number) => [...randomBytes(n)].map((b) => 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'[b % 62]).join('');
const b64ish = (n: number) => [...randomBytes(n)].map((b) => 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'[b % 64]).join('');

// Fresh on every run: a hit in the store came from this test.
const GREP_KEY = `AKIA${upper(16)}`;
const GREP_SECRET = b64ish(40);
const GREP_TOKEN = `ghp_${alnum(36)}`;
const PAUSED_TOKEN = `ghp_${alnum(36)}`;
const EXEC_KEY = `AKIA${upper(16)}`;
const SECRETS: Record<string, string> = { GREP_KEY, GREP_SECRET, GREP_TOKEN, PAUSED_TOKEN, EXEC_KEY };
/** printf's octal escapes: the command line that writes a secret does not hold it. */
const octal = (t: string) => [...t].map((c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`).join('');

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

function forms(secret: string): Buffer[] {
  const b = Buffer.from(secret);
  const out = [b, Buffer.from(b.toString('hex')), Buffer.from(b.toString('hex').toUpperCase())];
  for (let shift = 0; shift < 3; shift++) out.push(Buffer.from(Buffer.concat([Buffer.alloc(shift, 0x20), b]).toString('base64').slice(4, -4)));
  return out;
}

function findInDataDir(dir: string, secrets: Record<string, string>): string[] {
  const hits = new Set<string>();
  for (const f of filesUnder(dir)) {
    const content = readFileSync(f);
    for (const [name, secret] of Object.entries(secrets)) for (const form of forms(secret)) if (content.includes(form)) hits.add(`${name} in ${path.relative(dir, f)}`);
  }
  return [...hits];
}

before(async () => {
  w = await startSshWorld();
});

after(async () => {
  await w?.stop();
});

test('tmux over ssh: coloured grep output and a key paused mid-write leave no secret in the data directory', async () => {
  const file = `/tmp/gatehouse-adv-creds-${process.pid}`;
  const creds = `[default]\naws_access_key_id = ${GREP_KEY}\naws_secret_access_key = ${GREP_SECRET}\ngithub = ${GREP_TOKEN}\n`;
  const setup = await runSsh(w.opts(), `printf '${octal(creds)}' > ${file}`);
  assert.equal(setup.code, 0, setup.stderr);
  const beforeIds = await sessionIds(w.gw);
  const opts = w.opts();
  const term = await startTerminal({ command: ['ssh', '-tt', ...sshArgs(opts), `${opts.user}@127.0.0.1`], cols: 160, rows: 40, term: 'xterm-256color', env: clientEnv() });
  try {
    await term.send('echo READY-$((40+2))\n');
    await term.waitFor('READY-42', 15_000);
    await term.send(`grep --color=always -E 'AKIA|aws_secret|ghp_' ${file}; echo GREP-$((1+1))\n`);
    await term.waitFor('GREP-2', 15_000);
    // Half a token, a pause longer than the recorder's 500 ms, the rest.
    await term.send(`printf '${octal(PAUSED_TOKEN.slice(0, 30))}'; sleep 1.2; printf '${octal(PAUSED_TOKEN.slice(30))}\\n'; echo PAUSE-$((2+1))\n`);
    await term.waitFor('PAUSE-3', 15_000);
    await term.send(`rm -f ${file}; exit\n`);
    await term.waitExit(15_000);
  } finally {
    await term.kill();
  }
  const rec = (await newRecordings(w.gw, beforeIds, 1))[0]!;
  const out = eventsOf(rec, 'term.out').map((e) => String(e.data.d)).join('');
  assert.ok(out.includes('\x1b[01;31m\x1b[K'), 'grep coloured its matches');
  assert.ok((out.match(/\[masked:(aws|github)\]/g) ?? []).length >= 4, JSON.stringify(out.slice(-800)));
  assert.deepEqual(findInDataDir(w.gw.dataDir, { GREP_KEY, GREP_SECRET, GREP_TOKEN, PAUSED_TOKEN }), []);
  // No part of the paused token's first half either (AKIA/ghp_ and a few characters at most).
  for (const f of filesUnder(w.gw.dataDir)) assert.ok(!readFileSync(f).includes(Buffer.from(PAUSED_TOKEN.slice(4, 30))), `first half in ${f}`);
});

test('ssh exec: coloured grep output is masked in the exit sample', async () => {
  const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts(), `printf 'id = ${octal(EXEC_KEY)}\\n' | grep --color=always AKIA`));
  assert.equal(result.code, 0, result.stderr);
  assert.ok(result.stdout.includes(EXEC_KEY.slice(4)), 'the client sees the output as it is');
  const exit = eventsOf(rec, 'ssh.exit')[0]!.data as { stdout: { sample: string } };
  assert.match(exit.stdout.sample, /\[masked:aws\]/);
  assert.deepEqual(findInDataDir(w.gw.dataDir, SECRETS), []);
});
