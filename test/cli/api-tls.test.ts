// The API over TLS with the real CLI (issue 12 item 10): a gateway started with --http-tls on
// serves its generated, persisted certificate and prints its fingerprint; the CLI trusts it through
// a CA file or a pinned fingerprint and refuses otherwise; with a wrong pin it sends nothing (an
// impostor TLS server that records every byte sees none); plain HTTP off loopback is refused at
// start unless allowed (then a loud warning) and refused by the CLI unless --insecure-http; Git
// over HTTPS works with GIT_SSL_CAINFO.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { createBareRepo, gitRun, startGitHttpServer, type GitHttpServer } from '../support/git-servers.ts';
import { loadOrCreateTls } from '../../src/tls/certificate.ts';
import { certificateFingerprint } from '../../src/tls/fingerprint.ts';

let gw: TestGateway;
let other: TestGateway;
let work: string;
/** No trust from the caller's environment or the helper: each test says what it trusts. */
const NO_TRUST = { GATEHOUSE_GATEWAY_FINGERPRINT: '', GATEHOUSE_GATEWAY_CA: '', GATEHOUSE_INSECURE_HTTP: '', GATEHOUSE_CONFIG_DIR: '' };

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-api-tls-'));
  NO_TRUST.GATEHOUSE_CONFIG_DIR = path.join(work, 'cli-config');
  [gw, other] = await Promise.all([startTestGateway({ args: ['--http-tls', 'on'] }), startTestGateway({ args: ['--http-tls', 'on'] })]);
});

after(async () => {
  await gw?.stop();
  await other?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const certFile = (g: TestGateway): string => path.join(g.dataDir, 'tls', 'cert.pem');

test('the gateway serves https with its generated certificate and prints that certificate\'s fingerprint', async () => {
  assert.match(gw.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const fromDisk = certificateFingerprint(readFileSync(certFile(gw), 'utf8'));
  assert.equal(gw.apiFingerprint, fromDisk, 'the banner names the certificate kept in the data directory');
  // The same digest openssl prints, so an operator can check it with standard tools.
  const openssl = execFileSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', certFile(gw)], { encoding: 'utf8' });
  const hex = /=([0-9A-F:]+)/.exec(openssl)![1].replaceAll(':', '');
  assert.equal(`SHA256:${Buffer.from(hex, 'hex').toString('base64').replace(/=+$/, '')}`, fromDisk);
  assert.match(gw.logs(), new RegExp(`"tls":true,"fingerprint":"${fromDisk.replace(/[+/]/g, '\\$&')}","msg":"api listening"`));
  assert.notEqual(other.apiFingerprint, gw.apiFingerprint, 'each gateway has its own certificate');
  // A peer that speaks plain HTTP to the TLS port gets no API.
  const plain = await fetch(gw.url.replace('https:', 'http:') + '/api/v1/health').then((r) => r.status, (e: Error) => e.message);
  assert.notEqual(plain, 200);
});

test('the CLI trusts the API through a CA file (by address and by name) or a pinned fingerprint', async () => {
  const viaCa = await gw.cli(['identity', 'list'], { env: { ...NO_TRUST, GATEHOUSE_GATEWAY_CA: certFile(gw) } });
  assert.equal(viaCa.code, 0, viaCa.stderr);
  assert.match(viaCa.stdout, /admin/);
  const byName = await gw.cli(['--gateway', gw.url.replace('127.0.0.1', 'localhost'), '--gateway-ca', certFile(gw), 'identity', 'list'], { env: NO_TRUST });
  assert.equal(byName.code, 0, byName.stderr);
  const viaPin = await gw.cli(['--gateway-fingerprint', gw.apiFingerprint!, 'identity', 'list'], { env: NO_TRUST });
  assert.equal(viaPin.code, 0, viaPin.stderr);
  assert.match(viaPin.stdout, /admin\s+human/);
  // openssl's hex form is accepted as a pin too.
  const hex = execFileSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', certFile(gw)], { encoding: 'utf8' }).trim();
  const viaHex = await gw.cli(['identity', 'list'], { env: { ...NO_TRUST, GATEHOUSE_GATEWAY_FINGERPRINT: hex } });
  assert.equal(viaHex.code, 0, viaHex.stderr);
});

test('without trust, with another gateway\'s CA or fingerprint, the CLI refuses clearly', async () => {
  const none = await gw.cli(['identity', 'list'], { env: NO_TRUST });
  assert.equal(none.code, 2);
  assert.match(none.stderr, /cannot verify the gateway's certificate .*--gateway-fingerprint.*--gateway-ca/);
  const wrongCa = await gw.cli(['identity', 'list'], { env: { ...NO_TRUST, GATEHOUSE_GATEWAY_CA: certFile(other) } });
  assert.equal(wrongCa.code, 2);
  assert.match(wrongCa.stderr, /cannot verify the gateway's certificate/);
  const wrongPin = await gw.cli(['identity', 'list'], { env: { ...NO_TRUST, GATEHOUSE_GATEWAY_FINGERPRINT: other.apiFingerprint! } });
  assert.equal(wrongPin.code, 2);
  assert.ok(wrongPin.stderr.includes(`presented certificate ${gw.apiFingerprint}, not the pinned ${other.apiFingerprint}`), wrongPin.stderr);
  assert.match(wrongPin.stderr, /refused before sending anything/);
  const malformed = await gw.cli(['identity', 'list'], { env: { ...NO_TRUST, GATEHOUSE_GATEWAY_FINGERPRINT: 'SHA256:short' } });
  assert.notEqual(malformed.code, 0);
  assert.match(malformed.stderr, /a gateway fingerprint is SHA256:/);
  // A pin with a plain http URL would protect nothing.
  const pinnedHttp = await gw.cli(['--gateway', 'http://127.0.0.1:1', 'identity', 'list'], { env: { ...NO_TRUST, GATEHOUSE_GATEWAY_FINGERPRINT: gw.apiFingerprint! } });
  assert.equal(pinnedHttp.code, 2);
  assert.match(pinnedHttp.stderr, /needs an https:\/\/ gateway URL/);
});

/** A TLS server with a certificate of its own that records what clients send after the handshake. */
async function startImpostor(): Promise<{ url: string; fingerprint: string; handshakes: () => number; received: () => Buffer; close: () => Promise<void> }> {
  const material = await loadOrCreateTls(path.join(work, `impostor-${Date.now()}`));
  let handshakes = 0;
  const chunks: Buffer[] = [];
  const server = tls.createServer({ cert: material.cert, key: material.key }, (socket) => {
    handshakes++;
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => {});
    // Answers like the gateway would, so a client that does send gets an answer and exits 0.
    socket.on('data', () => socket.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `https://127.0.0.1:${port}`, fingerprint: certificateFingerprint(material.cert),
    handshakes: () => handshakes, received: () => Buffer.concat(chunks),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

test('a wrong pin sends nothing: the impostor completes the handshake and receives no byte, no token', async () => {
  const impostor = await startImpostor();
  try {
    const r = await gw.cli(['--gateway', impostor.url, '--gateway-fingerprint', gw.apiFingerprint!, 'identity', 'list'], { env: NO_TRUST });
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(`presented certificate ${impostor.fingerprint}, not the pinned ${gw.apiFingerprint}`), r.stderr);
    assert.equal(impostor.handshakes(), 1, 'the TLS handshake completed: the refusal is the pin');
    assert.equal(impostor.received().length, 0, `nothing sent after the handshake: ${impostor.received().toString('latin1').slice(0, 200)}`);
    // Control: pinned to the impostor itself, the same command does send its token (so the probe sees what is sent).
    const control = await gw.cli(['--gateway', impostor.url, '--gateway-fingerprint', impostor.fingerprint, 'identity', 'list'], { env: NO_TRUST });
    assert.equal(control.code, 0, control.stderr);
    assert.ok(impostor.received().toString('latin1').includes(`authorization: Bearer ${gw.adminToken}`), 'the control request carried the token');
  } finally {
    await impostor.close();
  }
});

function nonLoopbackIPv4(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

test('plain HTTP on a non-loopback address is refused at start unless allowed; allowed, it warns and the CLI needs --insecure-http', async (t) => {
  await assert.rejects(startTestGateway({ args: ['--http', '0.0.0.0:0', '--http-tls', 'off'] }), /refusing to serve the API over plain HTTP on 0\.0\.0\.0:0, which is not loopback/);
  await assert.rejects(startTestGateway({ env: { GATEHOUSE_HTTP: '0.0.0.0:0' }, args: ['--http', '0.0.0.0:0', '--http-tls', 'off'] }), /http\.allow_plaintext/);

  // Left at auto, the same address serves TLS by itself.
  const auto = await startTestGateway({ args: ['--http', '0.0.0.0:0'] });
  try {
    assert.match(auto.url, /^https:\/\/0\.0\.0\.0:/);
    assert.ok(auto.apiFingerprint);
  } finally {
    await auto.stop();
  }

  const ip = nonLoopbackIPv4();
  if (!ip) { t.skip('no non-loopback IPv4 address on this machine'); return; }
  const plain = await startTestGateway({ args: ['--http', '0.0.0.0:0', '--http-tls', 'off', '--http-allow-plaintext'] });
  try {
    assert.match(plain.url, /^http:\/\/0\.0\.0\.0:/);
    assert.equal(plain.apiFingerprint, undefined);
    assert.match(plain.logs(), /"level":40.*the API serves PLAIN HTTP on 0\.0\.0\.0:\d+, which is not loopback/);
    const url = `http://${ip}:${plain.httpPort}`;
    const refused = await plain.cli(['--gateway', url, 'identity', 'list'], { env: NO_TRUST });
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /refusing plain http to .*tokens would cross the network in cleartext.*--insecure-http/);
    const insisted = await plain.cli(['--gateway', url, '--insecure-http', 'identity', 'list'], { env: NO_TRUST });
    assert.equal(insisted.code, 0, insisted.stderr);
    // Loopback stays as it was: plain http, no flag.
    const loopback = await plain.cli(['--gateway', `http://127.0.0.1:${plain.httpPort}`, 'identity', 'list'], { env: NO_TRUST });
    assert.equal(loopback.code, 0, loopback.stderr);
  } finally {
    await plain.stop();
  }
});

test('Git over HTTPS through the API listener: clone with GIT_SSL_CAINFO; refused by git without it', async () => {
  let server: GitHttpServer | undefined;
  try {
    const root = path.join(work, 'git-srv');
    const repo = await createBareRepo(root, 'app');
    server = await startGitHttpServer({ root });
    await gw.cliOk(['identity', 'add', 'gitter', '--kind', 'human']);
    await gw.cliOk(['connection', 'add', 'forge-tls', '--type', 'git-http', '--host', '127.0.0.1', '--port', String(server.port)]);
    await gw.cliOk(['grant', 'gitter', 'forge-tls']);
    const token = (await gw.cliOk(['token', 'issue', 'gitter', '--ttl', '1h'])).trim().split('\n').pop()!;
    const remote = `https://x:${token}@127.0.0.1:${gw.httpPort}/git/forge-tls/${repo.name}`;
    const untrusted = await gitRun(work, ['clone', '-q', remote, path.join(work, 'clone-untrusted')]);
    assert.notEqual(untrusted.code, 0);
    assert.match(untrusted.stderr, /certificate|SSL/i);
    const cloned = await gitRun(work, ['clone', '-q', remote, path.join(work, 'clone-tls')], { GIT_SSL_CAINFO: certFile(gw) });
    assert.equal(cloned.code, 0, cloned.stderr);
    const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--connection', 'forge-tls'])) as Array<{ identity: { name: string } }>;
    assert.ok(sessions.length >= 1 && sessions.every((s) => s.identity.name === 'gitter'), 'the clone over https is recorded under its identity');
  } finally {
    await server?.stop();
  }
});

test('a certificate configured for the API (gatehouse.yaml http section) is served instead; the CLI verifies it against its CA', async () => {
  const dir = path.join(work, 'api-ca');
  const sh = (args: string[]): string => execFileSync('openssl', args, { cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  execFileSync('mkdir', ['-p', dir]);
  sh(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=Test API CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-keyout', path.join(dir, 'ca.key'), '-out', path.join(dir, 'ca.pem')]);
  sh(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=gatehouse api', '-keyout', path.join(dir, 'api.key'), '-out', path.join(dir, 'api.csr')]);
  writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  sh(['x509', '-req', '-in', path.join(dir, 'api.csr'), '-CA', path.join(dir, 'ca.pem'), '-CAkey', path.join(dir, 'ca.key'), '-CAcreateserial', '-days', '2',
    '-extfile', path.join(dir, 'ext.cnf'), '-out', path.join(dir, 'api.pem')]);
  const config = path.join(dir, 'gatehouse.yaml');
  writeFileSync(config, 'http:\n  listen: 127.0.0.1:0\n  cert: api.pem\n  key: api.key\n');
  const custom = await startTestGateway({ args: ['--config', config] });
  try {
    assert.match(custom.url, /^https:/, 'a configured certificate means TLS, on loopback too');
    assert.equal(custom.apiFingerprint, certificateFingerprint(readFileSync(path.join(dir, 'api.pem'), 'utf8')));
    const viaCa = await custom.cli(['identity', 'list'], { env: { ...NO_TRUST, GATEHOUSE_GATEWAY_CA: path.join(dir, 'ca.pem') } });
    assert.equal(viaCa.code, 0, viaCa.stderr);
    // The generated listener certificate is not what the API serves now.
    const generated = await custom.cli(['identity', 'list'], { env: { ...NO_TRUST, GATEHOUSE_GATEWAY_CA: certFile(custom) } });
    assert.equal(generated.code, 2);
  } finally {
    await custom.stop();
  }
  writeFileSync(config, 'http:\n  listen: 127.0.0.1:0\n  tls: off\n  cert: api.pem\n  key: api.key\n');
  await assert.rejects(startTestGateway({ args: ['--config', config] }), /http\.tls is off but http\.cert is set/);
  writeFileSync(config, 'http:\n  listen: 127.0.0.1:0\n  cert: api.pem\n');
  await assert.rejects(startTestGateway({ args: ['--config', config] }), /needs both http\.cert and http\.key/);
  writeFileSync(config, 'http:\n  listen: 127.0.0.1:0\n  tsl: on\n');
  await assert.rejects(startTestGateway({ args: ['--config', config] }), /unknown key http\.tsl/);
});
