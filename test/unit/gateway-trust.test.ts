// Pure parts of the gateway's transport security (issue 12 item 10): which hosts count as
// loopback (plain http is allowed only there), the fingerprint forms accepted, which gateway URLs
// the CLI and connectors refuse before connecting, and the API TLS decision and its config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { isLoopbackHost } from '../../src/tls/loopback.ts';
import { formatFingerprint, parseFingerprint } from '../../src/tls/fingerprint.ts';
import { checkGatewayUrl } from '../../src/tls/gateway-client.ts';
import { decideApiTls, defaultApiTlsSettings } from '../../src/tls/api-tls.ts';
import { loadConfig } from '../../src/config/config.ts';

test('loopback: 127/8, ::1 in any spelling, localhost; not wildcard, LAN, mapped non-loopback or look-alike names', () => {
  for (const h of ['127.0.0.1', '127.255.0.9', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost', 'LOCALHOST']) assert.equal(isLoopbackHost(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.0.2.2', '::ffff:10.0.0.1', '::2', 'localhost.evil.example', 'a.localhost', '127.0.0.1.nip.io', 'example.com', '']) {
    assert.equal(isLoopbackHost(h), false, h);
  }
});

test('fingerprints: SHA256:base64 (with or without padding) and openssl\'s hex, nothing shorter or longer', () => {
  const digest = randomBytes(32);
  const shown = formatFingerprint(digest);
  assert.match(shown, /^SHA256:[A-Za-z0-9+/]{43}$/);
  assert.deepEqual(parseFingerprint(shown), digest);
  assert.deepEqual(parseFingerprint(`${shown}=`), digest);
  assert.deepEqual(parseFingerprint(` sha256:${shown.slice(7)} `), digest);
  const hex = digest.toString('hex');
  assert.deepEqual(parseFingerprint(hex), digest);
  assert.deepEqual(parseFingerprint(hex.toUpperCase().match(/../g)!.join(':')), digest);
  assert.deepEqual(parseFingerprint(`sha256 Fingerprint=${hex.toUpperCase().match(/../g)!.join(':')}`), digest);
  for (const bad of ['', 'SHA256:', shown.slice(0, -1), `${shown}A`, hex.slice(2), `${hex}00`, `MD5:${shown.slice(7)}`, 'SHA256:' + '!'.repeat(43)]) {
    assert.throws(() => parseFingerprint(bad), /a gateway fingerprint is SHA256:/, bad);
  }
});

test('gateway URLs: https always; http only to loopback unless insecureHttp; a pin or CA file never with http', () => {
  const pin = formatFingerprint(randomBytes(32));
  assert.equal(checkGatewayUrl('https://gw.example:8443', {}).host, 'gw.example:8443');
  assert.equal(checkGatewayUrl('https://gw.example', { fingerprint: pin }).protocol, 'https:');
  assert.equal(checkGatewayUrl('http://127.0.0.1:8080', {}).port, '8080');
  assert.equal(checkGatewayUrl('http://[::1]:8080', {}).port, '8080');
  assert.throws(() => checkGatewayUrl('http://gw.example:8080', {}), /refusing plain http to gw\.example:8080: tokens would cross the network in cleartext/);
  assert.throws(() => checkGatewayUrl('http://0.0.0.0:8080', {}), /refusing plain http/);
  assert.throws(() => checkGatewayUrl('http://localhost.evil.example', {}), /refusing plain http/);
  assert.equal(checkGatewayUrl('http://gw.example:8080', { insecureHttp: true }).hostname, 'gw.example');
  assert.throws(() => checkGatewayUrl('http://127.0.0.1:8080', { fingerprint: pin }), /needs an https:\/\/ gateway URL/);
  assert.throws(() => checkGatewayUrl('http://127.0.0.1:8080', { caFile: '/etc/ssl/ca.pem' }), /needs an https:\/\/ gateway URL/);
  assert.throws(() => checkGatewayUrl('https://gw.example', { fingerprint: 'SHA256:nope' }), /a gateway fingerprint is/);
  assert.throws(() => checkGatewayUrl('ftp://gw.example', {}), /must start with https:\/\//);
  assert.throws(() => checkGatewayUrl('gw.example:8443', {}), /must start with https:\/\/|is not a URL/);
  assert.throws(() => checkGatewayUrl('not a url', {}), /is not a URL/);
});

test('API TLS decision: plain on loopback by default, TLS elsewhere by itself, plain elsewhere only when allowed', () => {
  const material = { cert: '', key: 'k', generated: false };
  const loop = { host: '127.0.0.1', port: 8080 };
  const any = { host: '0.0.0.0', port: 8443 };
  assert.deepEqual(decideApiTls(loop, defaultApiTlsSettings(), material), { scheme: 'http' });
  assert.deepEqual(decideApiTls({ host: 'localhost', port: 1 }, defaultApiTlsSettings(), material), { scheme: 'http' });
  assert.deepEqual(decideApiTls(loop, { mode: 'off', allowPlaintext: false }, material), { scheme: 'http' });
  assert.throws(() => decideApiTls(any, { mode: 'off', allowPlaintext: false }, material), /refusing to serve the API over plain HTTP on 0\.0\.0\.0:8443/);
  assert.throws(() => decideApiTls({ host: '::', port: 1 }, { mode: 'off', allowPlaintext: false }, material), /refusing/);
  const allowed = decideApiTls(any, { mode: 'off', allowPlaintext: true }, material);
  assert.equal(allowed.scheme, 'http');
  assert.match(allowed.warning!, /PLAIN HTTP on 0\.0\.0\.0:8443/);
  assert.throws(() => decideApiTls(any, { mode: 'on', cert: '/x.pem', allowPlaintext: false }, material), /needs both http\.cert and http\.key/);
});

test('config: the http section, the environment and flags set the API TLS settings; bad values are refused', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-api-tls-config-'));
  try {
    const file = path.join(dir, 'gatehouse.yaml');
    writeFileSync(file, 'http:\n  listen: 0.0.0.0:8443\n  tls: on\n  cert: certs/api.pem\n  key: certs/api.key\n  allow_plaintext: true\n');
    const cfg = loadConfig({ config: file }, {});
    assert.deepEqual(cfg.http, { host: '0.0.0.0', port: 8443 });
    assert.deepEqual(cfg.httpTls, { mode: 'on', cert: path.join(dir, 'certs/api.pem'), key: path.join(dir, 'certs/api.key'), allowPlaintext: true });
    writeFileSync(file, 'http: 10.0.0.1:9000\n');
    assert.deepEqual(loadConfig({ config: file }, {}).httpTls, defaultApiTlsSettings(), 'a plain address keeps the defaults');
    writeFileSync(file, 'http:\n  tls: false\n');
    const off = loadConfig({ config: file }, {});
    assert.equal(off.httpTls.mode, 'off');
    assert.deepEqual(off.http, { host: '127.0.0.1', port: 8080 }, 'no listen: the default address');
    assert.equal(loadConfig({ config: file }, { GATEHOUSE_HTTP_TLS: 'auto' }).httpTls.mode, 'auto', 'the environment wins over the file');
    assert.equal(loadConfig({ config: file, httpTls: 'on' }, { GATEHOUSE_HTTP_TLS: 'off' }).httpTls.mode, 'on', 'flags win over the environment');
    assert.equal(loadConfig({ config: file }, { GATEHOUSE_HTTP_ALLOW_PLAINTEXT: '1' }).httpTls.allowPlaintext, true);
    assert.throws(() => loadConfig({ config: file }, { GATEHOUSE_HTTP_TLS: 'maybe' }), /GATEHOUSE_HTTP_TLS must be auto, on or off/);
    writeFileSync(file, 'http:\n  tls: sometimes\n');
    assert.throws(() => loadConfig({ config: file }, {}), /http\.tls must be auto, on or off/);
    writeFileSync(file, 'http:\n  lisen: 0.0.0.0:1\n');
    assert.throws(() => loadConfig({ config: file }, {}), /unknown key http\.lisen/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
