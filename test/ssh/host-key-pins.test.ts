// Host key pinning of targets with more than one host key, or none of the type the gateway used to
// prefer: an RSA key pinned from ssh-keyscan output must be the key the target presents (not a
// false "host key has changed" alarm because ed25519 was negotiated), several keys can be pinned
// known_hosts style, and a SHA256 fingerprint of any of the target's keys pins that key.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runSsh } from '../support/ssh-client.ts';
import { run } from '../support/processes.ts';
import { startSshd, type Sshd } from '../support/sshd.ts';
import { startSshWorld, type SshWorld } from './helpers.ts';
import { describePin, hostKeyAlgorithms, parseHostKeyPins, pinnedKeys } from '../../src/engines/ssh/host-key-pins.ts';

describe('parsing host key pins', () => {
  const ed = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';
  it('reads keys with and without a host field or comment, fingerprints, comments and blank lines', () => {
    const pins = parseHostKeyPins([`${ed} root@box`, `[127.0.0.1]:2222 ${ed}`, '# 127.0.0.1:22 SSH-2.0-OpenSSH_9.2', '', `|1|abc=|def= ${ed}`,
      `256 SHA256:${'A'.repeat(43)} host (ED25519)`]);
    assert.equal(pins.length, 2, 'the same key three times is one pin');
    assert.equal(pins[0]!.kind, 'key');
    assert.deepEqual(pins[1], { kind: 'fingerprint', fingerprint: `SHA256:${'A'.repeat(43)}` });
  });
  it('refuses what cannot be pinned, naming the line', () => {
    const refuse = (text: string, why: RegExp) => assert.throws(() => parseHostKeyPins(text), why);
    refuse('', /no host key given/);
    refuse('ssh-dss AAAAB3NzaC1kc3MAAACBAP', /DSA host keys are not accepted/);
    refuse(`@cert-authority * ${ed}`, /markers such as @cert-authority are not supported/);
    refuse('ssh-ed25519-cert-v01@openssh.com AAAA', /host certificate/);
    refuse('rsa-sha2-512 AAAA', /signature algorithm/);
    refuse('0f:1e:2d:3c:4b:5a:69:78:87:96:a5:b4:c3:d2:e1:f0', /MD5 fingerprints are not accepted/);
    refuse('MD5:0f:1e:2d:3c:4b:5a:69:78:87:96:a5:b4:c3:d2:e1:f0', /MD5 fingerprints are not accepted/);
    refuse('SHA256:short', /43 base64 characters/);
    refuse(`ssh-rsa ${ed.split(' ')[1]}`, /the line says ssh-rsa but the key inside is ssh-ed25519/);
    refuse(`${ed}\nnot a key at all`, /line 2 \("not a key at all"\)/);
    refuse(`ssh-ed25519 \x1b[31mAAAA`, /"ssh-ed25519 \?\[31mAAAA"/);
  });
  it('caps the number of pins', () => {
    const many = Array.from({ length: 17 }, (_, i) => `SHA256:${String(i).padStart(2, '0')}${'A'.repeat(41)}`);
    assert.throws(() => parseHostKeyPins(many), /at most 16 host keys/);
  });
  it('offers only the algorithms of the pinned key types, strongest first', () => {
    assert.deepEqual(hostKeyAlgorithms(['ssh-rsa']), ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']);
    assert.deepEqual(hostKeyAlgorithms(['ssh-rsa', 'ssh-ed25519']), ['ssh-ed25519', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']);
    assert.throws(() => pinnedKeys(`SHA256:${'A'.repeat(43)}`), /never resolved/);
    assert.match(describePin(pinnedKeys(ed)[0]!), /^SHA256:\S+ \(ssh-ed25519\)$/);
  });
});

describe('pinning the keys of a target with ed25519 and RSA host keys', () => {
  let w: SshWorld;
  let multi: Sshd;
  let rsaOnly: Sshd;

  before(async () => {
    w = await startSshWorld();
    // ed25519 first: OpenSSH and ssh2 both prefer it, which is what made an RSA pin fail.
    multi = await startSshd({ hostKeyTypes: ['ed25519', 'rsa', 'ecdsa'] });
    rsaOnly = await startSshd({ hostKeyTypes: ['rsa'] });
    for (const s of [multi, rsaOnly]) s.authorizeKey(w.sshd.clientPublicKey);
  });
  after(async () => {
    await multi?.stop();
    await rsaOnly?.stop();
    await w?.stop();
  });

  const keyOf = (s: Sshd, type: string) => s.hostKeys.find((k) => k.type === type)!;
  async function add(name: string, target: Sshd, pinArgs: string[]) {
    return w.gw.cli(['connection', 'add', name, '--type', 'ssh', '--host', target.host, '--port', String(target.port),
      '--user', target.user, '--key-file', w.sshd.clientKeyFile, ...pinArgs]);
  }
  async function addAndGrant(name: string, target: Sshd, pinArgs: string[]) {
    const r = await add(name, target, pinArgs);
    assert.equal(r.code, 0, r.stderr);
    await w.gw.cliOk(['grant', 'alice', name]);
  }
  async function storedPins(name: string): Promise<string[]> {
    const list = JSON.parse(await w.gw.cliOk(['connection', 'list', '--json'])) as Array<{ name: string; options: { hostKey?: string } }>;
    return list.find((c) => c.name === name)!.options.hostKey!.split('\n');
  }
  /** `echo through-gateway` on the target of connection `name`, as alice through the gateway. */
  async function echoThrough(name: string) {
    return runSsh(w.opts({ connection: name }), 'echo through-gateway');
  }

  it('an RSA key pinned from real ssh-keyscan output works although the target prefers ed25519', async () => {
    const scan = await run('ssh-keyscan', ['-t', 'rsa', '-p', String(multi.port), multi.host]);
    assert.equal(scan.code, 0, scan.stderr);
    assert.match(scan.stdout, /^\[127\.0\.0\.1\]:\d+ ssh-rsa AAAA/m);
    const file = join(w.work, 'rsa.keyscan');
    writeFileSync(file, scan.stdout);
    await addAndGrant('rsa-pinned', multi, ['--host-key-file', file]);
    assert.deepEqual(await storedPins('rsa-pinned'), [keyOf(multi, 'ssh-rsa').publicKey]);
    const r = await echoThrough('rsa-pinned');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'through-gateway\n');
  });

  it('a SHA256 fingerprint of any of the target\'s keys pins that key (resolved at registration)', async () => {
    const ecdsa = keyOf(multi, 'ecdsa-sha2-nistp256');
    await addAndGrant('ecdsa-by-fp', multi, ['--host-key', ecdsa.fingerprint]);
    assert.deepEqual(await storedPins('ecdsa-by-fp'), [ecdsa.publicKey]);
    const r = await echoThrough('ecdsa-by-fp');
    assert.equal(r.stdout, 'through-gateway\n', r.stderr);
  });

  it('a fingerprint the target does not have is refused, naming every key it offers; nothing is created', async () => {
    const r = await add('bad-fp', multi, ['--host-key', `SHA256:${'B'.repeat(43)}`]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`the target has no host key SHA256:B{43}`));
    for (const k of multi.hostKeys) assert.ok(r.stderr.includes(k.fingerprint), `names ${k.type}: ${r.stderr}`);
    const list = JSON.parse(await w.gw.cliOk(['connection', 'list', '--json'])) as Array<{ name: string }>;
    assert.equal(list.some((c) => c.name === 'bad-fp'), false);
  });

  it('several pins, known_hosts style: any one the target presents is accepted', async () => {
    // A stale ed25519 key of another host plus the target's real RSA key: the RSA key matches.
    const stale = w.sshd.hostKeyPublic;
    await addAndGrant('two-pins', rsaOnly, ['--host-key', stale, '--host-key', `[${rsaOnly.host}]:${rsaOnly.port} ${keyOf(rsaOnly, 'ssh-rsa').publicKey} comment`]);
    assert.equal((await storedPins('two-pins')).length, 2);
    const r = await echoThrough('two-pins');
    assert.equal(r.stdout, 'through-gateway\n', r.stderr);
  });

  it('a target without a key of the pinned types is refused with that reason, not "host key changed"', async () => {
    await addAndGrant('ed-on-rsa-only', rsaOnly, ['--host-key', w.sshd.hostKeyPublic]);
    const r = await echoThrough('ed-on-rsa-only');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /has no host key of the pinned types \(ssh-ed25519\)/);
    assert.doesNotMatch(r.stderr, /has changed/);
  });

  it('a changed RSA key is still "host key changed", naming the pinned and the offered fingerprint', async () => {
    const target = await startSshd({ hostKeyTypes: ['rsa', 'ed25519'] });
    try {
      target.authorizeKey(w.sshd.clientPublicKey);
      const pinned = keyOf(target, 'ssh-rsa');
      await addAndGrant('rsa-rotated', target, ['--host-key', pinned.publicKey]);
      assert.equal((await echoThrough('rsa-rotated')).stdout, 'through-gateway\n');
      await target.restartWithNewHostKey();
      const offered = keyOf(target, 'ssh-rsa');
      const r = await echoThrough('rsa-rotated');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /has changed/);
      assert.ok(r.stderr.includes(`pinned ${pinned.fingerprint}`) && r.stderr.includes(`offered ${offered.fingerprint}`), r.stderr);
    } finally {
      await target.stop();
    }
  });

  it('`connection add` without a pin lists every key; --host-key-fingerprint pins only the confirmed one', async () => {
    const rsa = keyOf(multi, 'ssh-rsa');
    const r = await add('confirm-rsa', multi, ['--host-key-fingerprint', rsa.fingerprint]);
    assert.equal(r.code, 0, r.stderr);
    for (const k of multi.hostKeys) assert.ok(r.stderr.includes(`${k.type} ${k.fingerprint}`), `lists ${k.type}: ${r.stderr}`);
    assert.deepEqual(await storedPins('confirm-rsa'), [rsa.publicKey]);
    const none = await add('confirm-none', multi, []);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /confirm one with --host-key-fingerprint/);
  });
});
