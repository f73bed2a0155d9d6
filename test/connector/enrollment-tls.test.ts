// Connector enrollment over TLS (issue 12 item 10): the connector checks the gateway's API
// certificate before the enrollment token leaves it — a pinned fingerprint (--gateway-fingerprint,
// printed by `connector add`), a CA file (--gateway-ca), or the system's CAs — and then trusts only
// the CA and tunnel address named in that authenticated answer. Against a gateway with another
// certificate it is refused, writes nothing, and the token stays unused (it still enrolls the
// connector at the right gateway afterwards). Plain http to a non-loopback address is refused
// unless --insecure-http.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import path from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import {
  addConnector, listConnectors, startConnector, tempDataDir, waitForConnectorStatus, type ConnectorProcess,
} from '../support/connector.ts';

let gw: TestGateway;
let impostor: TestGateway;
let cliConfig: string;
const running: ConnectorProcess[] = [];

before(async () => {
  cliConfig = mkdtempSync(path.join(tmpdir(), 'gatehouse-enroll-tls-'));
  // Two gateways, each with its own generated certificate: the second plays the one the connector must not trust.
  [gw, impostor] = await Promise.all([startTestGateway({ args: ['--http-tls', 'on'] }), startTestGateway({ args: ['--http-tls', 'on'] })]);
});

after(async () => {
  for (const c of running) await c.kill('SIGKILL');
  await gw?.stop();
  await impostor?.stop();
  rmSync(cliConfig, { recursive: true, force: true });
});

const certFile = (g: TestGateway): string => path.join(g.dataDir, 'tls', 'cert.pem');

async function run(o: { gateway: string; name: string; token: string; args: string[]; dataDir?: string; wait?: boolean }): Promise<ConnectorProcess> {
  const c = await startConnector({
    gateway: o.gateway, name: o.name, dataDir: o.dataDir ?? tempDataDir(), allow: ['127.0.0.1:5432'], token: o.token, args: o.args,
    env: { GATEHOUSE_CONFIG_DIR: cliConfig }, waitConnected: o.wait ?? true,
  });
  running.push(c);
  return c;
}

/** Runs an enrollment that must be refused: exits by itself, non-zero, with `message`, writing nothing. */
async function expectRefused(o: { gateway: string; name: string; token: string; args: string[] }, message: RegExp): Promise<string> {
  const c = await run({ ...o, wait: false });
  const timer = setTimeout(() => { void c.kill('SIGKILL'); }, 15_000);
  const exit = await c.exited;
  clearTimeout(timer);
  assert.equal(exit.signal, null, `exits by itself; stderr: ${c.logs()}`);
  assert.notEqual(exit.code, 0, `non-zero exit; stderr: ${c.logs()}`);
  assert.match(c.logs(), message);
  assert.doesNotMatch(c.stdout(), /is connected/);
  assert.deepEqual(existsSync(c.dataDir) ? readdirSync(c.dataDir) : [], [], 'nothing written to the data directory');
  return c.logs();
}

test('connector add prints the enrollment command with the gateway URL and its fingerprint', async () => {
  const r = await gw.cli(['connector', 'add', 'shown']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stderr.includes(`gatehouse connector --gateway ${gw.url} --gateway-fingerprint ${gw.apiFingerprint} --name shown`), r.stderr);
});

test('pinned to the gateway\'s fingerprint, a connector enrolls and connects; it keeps the CA the answer named', async () => {
  const token = await addConnector(gw, 'pinned');
  const c = await run({ gateway: gw.url, name: 'pinned', token, args: ['--gateway-fingerprint', gw.apiFingerprint!] });
  await waitForConnectorStatus(gw, 'pinned', 'connected');
  const cred = JSON.parse(readFileSync(path.join(c.dataDir, 'connector.json'), 'utf8')) as { caPem: string; tunnel: { port: number } };
  assert.equal(cred.caPem.trim(), readFileSync(path.join(gw.dataDir, 'tls', 'connector-ca.pem'), 'utf8').trim(), 'the tunnel is pinned to this gateway\'s connector CA');
  assert.equal(cred.tunnel.port, gw.connectorPort);
});

test('with the gateway\'s certificate as CA file, a connector enrolls; without any trust it is refused and the token survives', async () => {
  const token = await addConnector(gw, 'ca-file');
  await expectRefused({ gateway: gw.url, name: 'ca-file', token, args: [] }, /cannot enroll: cannot verify the gateway's certificate .*--gateway-fingerprint/);
  assert.equal((await listConnectors(gw)).find((c) => c.name === 'ca-file')?.status, 'awaiting enrollment', 'the token was not used');
  await run({ gateway: gw.url, name: 'ca-file', token, args: ['--gateway-ca', certFile(gw)] });
  await waitForConnectorStatus(gw, 'ca-file', 'connected');
});

test('a gateway with the wrong certificate gets no enrollment token: refused by pin and by CA file, the token still enrolls afterwards', async () => {
  // The token is the impostor's own, so that had it been sent, the impostor would have consumed it.
  const token = await addConnector(impostor, 'victim');
  const logs = await expectRefused({ gateway: impostor.url, name: 'victim', token, args: ['--gateway-fingerprint', gw.apiFingerprint!] },
    /cannot enroll: the gateway at 127\.0\.0\.1:\d+ presented certificate SHA256:\S+, not the pinned SHA256:/);
  assert.ok(logs.includes(`presented certificate ${impostor.apiFingerprint}, not the pinned ${gw.apiFingerprint}`), logs);
  await expectRefused({ gateway: impostor.url, name: 'victim', token, args: ['--gateway-ca', certFile(gw)] }, /cannot enroll: cannot verify the gateway's certificate/);
  assert.equal((await listConnectors(impostor)).find((c) => c.name === 'victim')?.status, 'awaiting enrollment', 'the token was never delivered');
  assert.doesNotMatch(impostor.logs(), /connector enrolled/);
  // Pinned to the right certificate, the very same token still works: it was not consumed.
  await run({ gateway: impostor.url, name: 'victim', token, args: ['--gateway-fingerprint', impostor.apiFingerprint!] });
  await waitForConnectorStatus(impostor, 'victim', 'connected');
});

test('a malformed fingerprint or a pin with an http URL is refused before anything is sent', async () => {
  const token = await addConnector(gw, 'typo');
  await expectRefused({ gateway: gw.url, name: 'typo', token, args: ['--gateway-fingerprint', 'SHA256:abc'] }, /a gateway fingerprint is SHA256:/);
  await expectRefused({ gateway: gw.url.replace('https:', 'http:'), name: 'typo', token, args: ['--gateway-fingerprint', gw.apiFingerprint!] }, /needs an https:\/\/ gateway URL/);
  assert.equal((await listConnectors(gw)).find((c) => c.name === 'typo')?.status, 'awaiting enrollment');
});

test('plain http to a non-loopback address is refused unless --insecure-http', async (t) => {
  const ip = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
  if (!ip) { t.skip('no non-loopback IPv4 address on this machine'); return; }
  const started = await startTestGateway({ args: ['--http', '0.0.0.0:0', '--http-tls', 'off', '--http-allow-plaintext'] });
  // The operator's commands stay on loopback (no flag needed there); the connector uses the network address.
  const loopback = `http://127.0.0.1:${started.httpPort}`;
  const plain: TestGateway = { ...started, cliOk: (args, o = {}) => started.cliOk(args, { ...o, env: { GATEHOUSE_URL: loopback, ...o.env } }) };
  try {
    const url = `http://${ip}:${started.httpPort}`;
    const token = await addConnector(plain, 'cleartext');
    await expectRefused({ gateway: url, name: 'cleartext', token, args: [] }, /cannot enroll: refusing plain http to .*--insecure-http/);
    assert.equal((await listConnectors(plain)).find((c) => c.name === 'cleartext')?.status, 'awaiting enrollment');
    await run({ gateway: url, name: 'cleartext', token, args: ['--insecure-http'] });
    await waitForConnectorStatus(plain, 'cleartext', 'connected');
  } finally {
    await plain.stop();
  }
});
