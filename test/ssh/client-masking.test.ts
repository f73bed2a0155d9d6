// Mask rules on what SSH clients receive (issue 15, item 3), with a real OpenSSH server and the
// real ssh/scp clients: an agent's `cat` of a file holding fake secrets gets them masked on stdout
// and stderr, a token the target prints in two writes 200 ms apart too; 10 MB of random base64
// comes through byte-identical; scp (SFTP and legacy) of the same file arrives unchanged; a human
// the rule does not scope sees the raw output; Git over SSH is not rewritten; a pty exec and an
// interactive shell (tmux) show the secrets masked, the prompt promptly, and a password prompt
// still hides its answer in the recording. The recording holds what the client got (masked once).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateClientKey, type ClientKey } from '../support/sshd.ts';
import { gitSshEnv, runScp, sshArgs, type SshOptions } from '../support/ssh-client.ts';
import { run } from '../support/processes.ts';
import { startTerminal, type Terminal } from '../support/terminal.ts';
import { findSecrets, selectDetectors } from '../../src/masking/detectors.ts';
import { clientEnv, eventsOf, oneEvent, recordOne, runSshRaw, sha256, sha256File, startSshWorld, type Data, type SshWorld } from './helpers.ts';

let w: SshWorld;
let bot: ClientKey;
let keyfile = '';
let raw = '';
let splitScript = '';

// Fake secrets, well-formed for the detectors, assembled at run time (no file here looks leaked).
const AWS_KEY = 'AKIA' + 'Q3EXAMPLEZ7K2M4P';
const GH_TOKEN = 'ghp_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';
const TICKET = 'TKT-' + '482913';
const PEM = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const PEM_BODY = PEM.split('\n')[1]!;
const DETECTORS = ['aws', 'github', 'gitlab', 'slack', 'stripe', 'google_api', 'private_key', 'jwt', 'url_credentials', 'credit_card'];

const POLICY = `
rules:
  - name: secrets-for-agents
    when: { kinds: [agent] }
    action: mask
    mask:
      detectors: [${DETECTORS.join(', ')}]
      style: redact
  - name: tickets-hashed
    when: { kinds: [agent] }
    action: mask
    mask:
      patterns: [{ name: ticket, pattern: 'TKT-[0-9]{6}' }]
      style: hash
`;

before(async () => {
  w = await startSshWorld();
  bot = await generateClientKey(w.work, 'ed25519', 'bot_ed25519');
  await w.gw.cliOk(['identity', 'add', 'bot', '--kind', 'agent']);
  await w.gw.cliOk(['key', 'add', 'bot', `${bot.privateKeyFile}.pub`]);
  await w.gw.cliOk(['grant', 'bot', 'box']);
  const file = join(w.work, 'policy.yaml');
  writeFileSync(file, POLICY);
  await w.gw.cliOk(['policy', 'apply', file]);
  keyfile = join(w.work, 'keyfile');
  raw = `# deploy credentials\naws_access_key_id = ${AWS_KEY}\nGH=${GH_TOKEN} (ci)\nticket ${TICKET} done\n${PEM}the end\n`;
  writeFileSync(keyfile, raw);
  splitScript = join(w.work, 'split.sh');
  writeFileSync(splitScript, `printf 'tok %s' '${GH_TOKEN.slice(0, 14)}'; sleep 0.2; printf '%s SPLIT-DONE\\n' '${GH_TOKEN.slice(14)}'\n`);
});

after(async () => {
  await w?.stop();
});

const asBot = (extra: Partial<SshOptions> = {}): SshOptions => w.opts({ identityFile: bot.privateKeyFile, ...extra });

function assertNoSecret(text: string, where: string): void {
  for (const s of [AWS_KEY, GH_TOKEN, PEM_BODY, TICKET, AWS_KEY.slice(4, 12), GH_TOKEN.slice(10, 24), GH_TOKEN.slice(-12)]) {
    assert.ok(!text.includes(s), `${where} holds ${s.slice(0, 6)}…: ${JSON.stringify(text.slice(0, 600))}`);
  }
}

function assertMasked(text: string, where: string): void {
  assertNoSecret(text, where);
  // A key block is masked whole, BEGIN and END lines included.
  for (const m of ['# deploy credentials\naws_access_key_id = [masked:aws]\n', 'GH=[masked:github] (ci)', '\n[masked:private_key]\nthe end\n']) {
    assert.ok(text.includes(m), `${where} lacks ${m}: ${JSON.stringify(text)}`);
  }
  assert.match(text, /ticket \[hash:ticket:[0-9a-f]{16}\] done/, where);
}

describe('mask rules on what the SSH client receives', () => {
  it("masks an agent's `cat keyfile` on stdout, records what it got, and notes the rule", async () => {
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(asBot(), `cat ${keyfile}`));
    assert.equal(result.code, 0, result.stderr);
    const out = result.stdout.toString('utf8');
    assertMasked(out, 'client stdout');
    assert.equal(out.split('\n')[0], '# deploy credentials');
    const exit = oneEvent(rec, 'ssh.exit');
    const stdout = exit.stdout as Data;
    // The recording holds what the client got: the same masked text (not masked a second time), its size and hash.
    assert.equal(stdout.sample, out);
    assert.equal(stdout.bytes, result.stdout.length);
    assert.equal(stdout.sha256, sha256(result.stdout));
    const notes = exit.masked as Data[];
    for (const d of ['aws', 'github', 'private_key']) {
      assert.ok(notes.some((n) => n.field === 'stdout' && n.rule === 'secrets-for-agents' && n.detector === d && n.count === 1), JSON.stringify(notes));
    }
    assert.ok(notes.some((n) => n.field === 'stdout' && n.rule === 'tickets-hashed' && n.detector === 'ticket'), JSON.stringify(notes));
    assertNoSecret(JSON.stringify(rec.events), 'the recording');
  });

  it('masks stderr too', async () => {
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(asBot(), `echo out-marker; cat ${keyfile} >&2; exit 3`));
    assert.equal(result.code, 3, result.stderr);
    assert.equal(result.stdout.toString(), 'out-marker\n');
    assertMasked(result.stderr, 'client stderr');
    const exit = oneEvent(rec, 'ssh.exit');
    assert.equal((exit.stderr as Data).sample, result.stderr);
    assert.ok((exit.masked as Data[]).some((n) => n.field === 'stderr' && n.detector === 'aws'));
  });

  it('masks a command run with a pty (ssh -tt): its terminal output, stderr merged in', async () => {
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(asBot({ extra: ['-tt'] }), `cat ${keyfile}; cat ${keyfile} >&2`));
    assert.equal(result.code, 0, result.stderr);
    const out = result.stdout.toString().replaceAll('\r\n', '\n');
    assertMasked(out, 'pty output');
    assert.equal(out.split('[masked:aws]').length, 3, 'both copies masked');
    assertNoSecret(JSON.stringify(rec.events), 'the recording');
    assert.ok((oneEvent(rec, 'ssh.exit').masked as Data[]).some((n) => n.field === 'stdout' && n.detector === 'aws' && n.count === 2));
  });

  it('masks a token printed in two writes 200 ms apart (and an AWS key, and a key block)', async () => {
    const gh = [GH_TOKEN.slice(0, 14), GH_TOKEN.slice(14)];
    const aws = [AWS_KEY.slice(0, 9), AWS_KEY.slice(9)];
    const pem = [PEM.slice(0, 120), PEM.slice(120)];
    const cmd = `printf 'token %s' '${gh[0]}'; sleep 0.2; printf '%s next\\n' '${gh[1]}'; `
      + `printf 'id=%s' '${aws[0]}'; sleep 0.2; printf '%s end\\n' '${aws[1]}'; `
      + `printf '%s' '${pem[0]}'; sleep 0.2; printf '%s' '${pem[1]}'; echo done`;
    const t0 = performance.now();
    const result = await runSshRaw(asBot(), cmd);
    const ms = performance.now() - t0;
    assert.equal(result.code, 0, result.stderr);
    const out = result.stdout.toString();
    assertNoSecret(out, 'split output');
    for (const part of [...gh, ...aws]) assert.ok(!out.includes(part), `a part of a split secret reached the client: ${JSON.stringify(out)}`);
    assert.ok(!out.includes(PEM.split('\n')[2]!), 'a line of the split key block');
    // What was cut by the pause is masked as it went out, and the rest with it as context.
    assert.match(out, /^token (?:\[masked:github\]){1,2} next\nid=(?:\[masked:aws\]){1,2} end\n(?:\[masked:private_key\]){1,2}\ndone\n$/, JSON.stringify(out));
    // And the same as the human sees it: raw.
    const human = await runSshRaw(w.opts(), cmd);
    assert.equal(human.stdout.toString(), `token ${GH_TOKEN} next\nid=${AWS_KEY} end\n${PEM}done\n`);
    console.log(`# split writes: masked run ${ms.toFixed(0)} ms (three 200 ms pauses)`);
  });

  it('passes 10 MB of random base64 without secrets through byte-identical, at speed', async () => {
    const big = join(w.work, 'big.b64');
    const detectors = selectDetectors(DETECTORS);
    // Random data could (rarely) hold a detector's shape: draw until it holds none.
    let text = '';
    for (let i = 0; i < 5; i++) {
      text = randomBytes(7_500_000).toString('base64').replace(/.{76}/g, '$&\n') + '\n';
      if (findSecrets(text, detectors).length === 0 && !/TKT-[0-9]{6}/.test(text)) break;
      text = '';
    }
    assert.ok(text, 'random base64 without detector findings');
    writeFileSync(big, text);
    const want = await sha256File(big);
    const time = async (o: SshOptions) => {
      const t0 = performance.now();
      const r = await runSshRaw(o, `cat ${big}`, undefined, 120_000);
      const ms = performance.now() - t0;
      assert.equal(r.code, 0, r.stderr);
      return { r, ms };
    };
    const { rec, result: masked } = await recordOne(w.gw, () => time(asBot()));
    assert.equal(masked.r.stdout.length, text.length);
    assert.equal(sha256(masked.r.stdout), want, 'byte-identical through the masking');
    assert.equal(oneEvent(rec, 'ssh.exit').masked, undefined, 'nothing noted as masked');
    const plain = await time(w.opts());
    assert.equal(sha256(plain.r.stdout), want);
    const mb = text.length / 1e6;
    console.log(`# ${mb.toFixed(1)} MB base64 via cat: masked ${masked.ms.toFixed(0)} ms (${(mb / masked.ms * 1000).toFixed(1)} MB/s), `
      + `no mask rule ${plain.ms.toFixed(0)} ms (${(mb / plain.ms * 1000).toFixed(1)} MB/s)`);
    assert.ok(masked.ms < 20_000, `10 MB took ${masked.ms.toFixed(0)} ms masked`);
  });

  it('does not rewrite file transfers: scp (SFTP and legacy -O) of the keyfile arrives byte-identical', async () => {
    for (const legacy of [false, true]) {
      const dest = join(w.work, `fetched-${legacy ? 'legacy' : 'sftp'}`);
      const r = await runScp(asBot(), [...(legacy ? ['-O'] : []), `remote:${keyfile}`, dest]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(readFileSync(dest, 'utf8'), raw, `scp ${legacy ? '-O' : ''} rewrote the file`);
    }
    // Upload too: the server's answers are not rewritten either.
    const up = join(w.work, 'uploaded');
    const r = await runScp(asBot(), ['-O', keyfile, `remote:${up}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(up, 'utf8'), raw);
  });

  it('does not rewrite Git service channels: a clone whose pack and ref names hold the secrets arrives intact', async () => {
    const src = join(w.work, 'git-src');
    const bare = join(w.work, 'served.git');
    const g = async (cwd: string, args: string[], env: NodeJS.ProcessEnv = {}) => {
      const r = await run('git', args, { cwd, env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@e', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@e', ...env }, timeoutMs: 60_000 });
      assert.equal(r.code, 0, `git ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    await g(w.work, ['init', '-q', '-b', 'main', src]);
    writeFileSync(join(src, 'keyfile'), raw);
    await g(src, ['add', 'keyfile']);
    await g(src, ['commit', '-q', '-m', `add ${GH_TOKEN}`]);
    // A branch named after the key: ref names travel in clear in the advertisement's pkt-lines.
    await g(src, ['branch', AWS_KEY]);
    await g(w.work, ['clone', '-q', '--bare', src, bare]);
    // Uncompressed packs: the file's bytes, secrets included, are in the pack as they are.
    await g(bare, ['config', 'pack.compression', '0']);
    await g(bare, ['config', 'core.compression', '0']);
    const pack = await run('sh', ['-c', 'git rev-list --objects --all | git pack-objects -q --stdout | base64 -w0'], { cwd: bare });
    const packText = Buffer.from(pack.stdout, 'base64').toString('latin1');
    assert.ok(packText.includes(AWS_KEY) && packText.includes(GH_TOKEN) && packText.includes(PEM_BODY), 'the pack holds the secrets in clear');
    const dest = join(w.work, 'cloned');
    await g(w.work, ['clone', '-q', `ssh://box@127.0.0.1:${w.gw.sshPort}${bare}`, dest], gitSshEnv({ identityFile: bot.privateKeyFile }));
    assert.equal(readFileSync(join(dest, 'keyfile'), 'utf8'), raw);
    assert.match(await g(dest, ['branch', '-r']), new RegExp(`origin/${AWS_KEY}`));
    assert.match(await g(dest, ['log', '-1', '--format=%s']), new RegExp(GH_TOKEN));
  });

  it('leaves the output of an identity the rule does not scope as it came', async () => {
    const { rec, result } = await recordOne(w.gw, () => runSshRaw(w.opts(), `cat ${keyfile}; cat ${keyfile} >&2`));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.toString(), raw);
    assert.equal(result.stderr, raw);
    const exit = oneEvent(rec, 'ssh.exit');
    assert.ok(!((exit.masked as Data[] | undefined) ?? []).some((n) => 'rule' in n), 'no mask rule noted');
    // The store masks its own copy whatever the client got (docs/masking.md).
    assertNoSecret(JSON.stringify(rec.events).replace(/TKT-\d{6}/g, ''), 'the recording of the raw session');
  });
});

describe('mask rules in an interactive terminal (tmux)', () => {
  async function shell(opts: SshOptions): Promise<Terminal> {
    const term = await startTerminal({ command: ['ssh', '-tt', ...sshArgs(opts), `${opts.user}@127.0.0.1`], cols: 120, rows: 40, term: 'xterm-256color', env: clientEnv() });
    await term.send('echo READY-$((40+2))\n');
    await term.waitFor('READY-42', 15_000);
    return term;
  }

  /** ms from Enter to the next prompt's marker, and per-key echo, median of runs. */
  async function promptness(term: Terminal): Promise<{ prompt: number; echo: number }> {
    const prompts: number[] = [];
    const echoes: number[] = [];
    for (let i = 0; i < 7; i++) {
      prompts.push(await term.measureEcho(`echo P${i}-$((${i}+100))\n`, `P${i}-${i + 100}`));
      echoes.push(await term.measureEcho(`x${i}q`));
      await term.sendKeys('C-u');
    }
    const median = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1]!;
    return { prompt: median(prompts), echo: median(echoes) };
  }

  it("shows an agent's token masked, keeps the prompt prompt, and records what the screen showed", async () => {
    let screen = '';
    let masked = { prompt: 0, echo: 0 };
    const { rec } = await recordOne(w.gw, async () => {
      const term = await shell(asBot());
      try {
        await term.send(`cat ${keyfile}; echo CAT-$((1+1))\n`);
        screen = await term.waitFor(/CAT-2[\s\S]*[#$] ?$/m, 15_000);
        // A token printed in two writes 200 ms apart (by a script: the typed line must not hold it).
        await term.send(`sh ${splitScript}\n`);
        screen = await term.waitFor('SPLIT-DONE', 15_000);
        // A password prompt without a trailing space is held by the masking, then sent: the
        // recorder still sees it before the answer, and records the answer as hidden input.
        await term.send(`read -r -s -p 'Password:' pw; echo; echo LEN-\${#pw}-END\n`);
        await term.waitFor('Password:', 10_000);
        await term.send('hunter2-not-shown\n');
        await term.waitFor('LEN-17-END', 10_000);
        masked = await promptness(term);
        await term.send('exit\n');
        await term.waitExit(15_000);
      } finally {
        await term.kill();
      }
    });
    assertNoSecret(screen, 'the agent\'s screen');
    for (const m of ['aws_access_key_id = [masked:aws]', 'GH=[masked:github] (ci)', '[masked:private_key]', 'tok [masked:github]']) {
      assert.ok(screen.includes(m), `screen lacks ${m}:\n${screen}`);
    }
    const typed = eventsOf(rec, 'term.in').map((e) => String(e.data.d)).join('');
    assert.ok(!typed.includes('hunter2') && typed.includes('[hidden input: 17 bytes]'), `term.in: ${JSON.stringify(typed.slice(-300))}`);
    const out = eventsOf(rec, 'term.out').map((e) => String(e.data.d)).join('');
    assert.ok(out.includes('aws_access_key_id = [masked:aws]') && out.includes('[masked:private_key]'), 'term.out holds the masked output');
    assertNoSecret(JSON.stringify(rec.events), 'the recording');
    const notes = oneEvent(rec, 'ssh.exit').masked as Data[];
    assert.ok(notes.some((n) => n.field === 'stdout' && n.rule === 'secrets-for-agents' && n.detector === 'github'), JSON.stringify(notes));

    const term = await shell(w.opts());
    let plain = { prompt: 0, echo: 0 };
    try {
      await term.send(`cat ${keyfile}; echo CAT-$((1+1))\n`);
      const humanScreen = await term.waitFor('CAT-2', 15_000);
      assert.ok(humanScreen.includes(`aws_access_key_id = ${AWS_KEY}`), 'the human sees the raw file');
      plain = await promptness(term);
    } finally {
      await term.kill();
    }
    console.log(`# terminal (medians of 7): command to its output ${masked.prompt.toFixed(0)} ms masked vs ${plain.prompt.toFixed(0)} ms without a mask rule; `
      + `key echo ${masked.echo.toFixed(0)} ms vs ${plain.echo.toFixed(0)} ms`);
    assert.ok(masked.prompt < 1000, `output ${masked.prompt.toFixed(0)} ms after Enter`);
    assert.ok(masked.echo < 1000, `key echo ${masked.echo.toFixed(0)} ms`);
  });
});
