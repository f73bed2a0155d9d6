// Single sign-on's pure parts: the `sso` block of gatehouse.yaml (and the messages for what it
// refuses), user codes, identity names from usernames, and what an identity keeps of the claims.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { parseSso } from '../../src/identity/sso/config.ts';
import { newUserCode, normalizeUserCode } from '../../src/identity/sso/login-codes.ts';
import { identityNameFor } from '../../src/identity/sso/person-identity.ts';
import { groupsFrom, keptClaims } from '../../src/identity/sso/verified-person.ts';
import { selfSignedRsa } from '../support/saml-idp.ts';

const parse = (yaml: string, env: NodeJS.ProcessEnv = {}, dir = '/nonexistent') => parseSso(YAML.parse(yaml), dir, env);

test('sso: a full configuration, with defaults', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-sso-config-'));
  try {
    writeFileSync(path.join(dir, 'idp.pem'), (await selfSignedRsa('IdP')).certPem);
    const cfg = parse(`
public_url: https://gatehouse.example.com/
oidc:
  - name: corp
    issuer: https://login.example.com
    client_id: gatehouse
    client_secret_env: SECRET
    groups_claim: groups
saml:
  - name: adfs
    entry_point: https://adfs.example.com/adfs/ls
    idp_cert: idp.pem
`, { SECRET: 's3cret' }, dir);
    assert.equal(cfg.publicUrl, 'https://gatehouse.example.com');
    assert.equal(cfg.tokenTtlSeconds, 8 * 3600);
    assert.equal(cfg.loginTimeoutSeconds, 600);
    assert.deepEqual(cfg.oidc[0], {
      name: 'corp', issuer: 'https://login.example.com', clientId: 'gatehouse', clientSecret: 's3cret', scopes: ['openid', 'profile', 'email'],
      usernameClaim: 'preferred_username', groupsClaim: 'groups', clockSkewSeconds: 30,
    });
    assert.equal(cfg.saml[0].usernameAttribute, undefined, 'the NameID names the identity by default');
    assert.equal(cfg.saml[0].wantResponseSigned, false);
    assert.match(cfg.saml[0].idpCerts[0], /^-----BEGIN CERTIFICATE-----/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sso: what the configuration refuses, and how it says so', () => {
  const oidc = (extra: string) => `oidc:\n  - name: corp\n    issuer: https://login.example.com\n    client_id: gatehouse\n${extra}`;
  const cases: Array<[string, string]> = [
    ['token_ttl: 25h', 'duration "25h" is longer than the maximum of 1d'],
    ['public_url: http://gatehouse.example.com', 'sso.public_url "http://gatehouse.example.com" must be an https:// URL (http:// only on a loopback address)'],
    ['bogus: 1', 'sso: unknown setting "bogus"'],
    [oidc('    colour: red'), 'sso.oidc[0] ("corp"): unknown setting "colour"'],
    ['oidc:\n  - name: corp\n    client_id: x', 'sso.oidc[0] ("corp"): issuer is required'],
    [oidc('    client_secret_env: NOT_SET'), 'sso.oidc[0] ("corp"): client_secret_env names NOT_SET, which is not set'],
    [oidc('    scopes: [profile]'), 'sso.oidc[0] ("corp"): scopes must include openid'],
    [oidc('') + '  - name: corp\n    issuer: https://b.example.com\n    client_id: y', 'sso: two providers are named "corp"'],
    [oidc('') + 'default_provider: other', 'sso.default_provider "other" is not a provider'],
    ['saml:\n  - name: adfs\n    entry_point: https://adfs.example.com/sso', 'sso.saml[0] ("adfs"): idp_cert is required (the certificate the IdP signs with: PEM, or a file)'],
    ['saml:\n  - name: adfs\n    entry_point: https://adfs.example.com/sso\n    idp_cert: missing.pem', 'sso.saml[0] ("adfs"): idp_cert "missing.pem" is neither a PEM certificate nor a file'],
    ['saml:\n  - name: adfs\n    entry_point: https://adfs.example.com/sso\n    idp_cert: "-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----"', 'sso.saml[0] ("adfs"): idp_cert is not a PEM certificate'],
  ];
  for (const [yaml, message] of cases) {
    assert.throws(() => parse(yaml), (err: Error) => err.message.startsWith(message), `${yaml} → ${message}`);
  }
});

test('user codes: 8 letters without vowels; typed in any case, with or without the dash', () => {
  const code = newUserCode();
  assert.match(code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
  assert.equal(normalizeUserCode(code.toLowerCase().replace('-', ' ')), code);
  assert.equal(normalizeUserCode('ABCD-EFGH'), undefined, 'vowels are never part of a code');
  assert.equal(normalizeUserCode('BCD'), undefined);
});

test('identity names from usernames: kept when allowed, otherwise made allowed', () => {
  assert.equal(identityNameFor('alice'), 'alice');
  assert.equal(identityNameFor('alice@example.com'), 'alice@example.com');
  assert.equal(identityNameFor('CORP\\Alice Smith'), 'CORP-Alice-Smith');
  assert.equal(identityNameFor('__x__'), 'x');
  assert.equal(identityNameFor('---'), '');
  assert.equal(identityNameFor('a'.repeat(80)).length, 63);
});

test('kept claims: scalars as text, lists of scalars as JSON; timing and per-sign-in values left out; groups filtered', () => {
  assert.deepEqual(keptClaims({ sub: 'u1', email_verified: true, groups: ['dba', 'dev'], exp: 1, nonce: 'n', address: { street: 'x' }, 'http://schemas/x': 'y' }),
    { sub: 'u1', email_verified: 'true', groups: '["dba","dev"]' });
  assert.deepEqual(groupsFrom(['dba', 'dba', 42, 'CN=Ops,OU=Groups', '', 'bad\nname']), ['dba', 'CN=Ops,OU=Groups']);
  assert.deepEqual(groupsFrom('dba'), ['dba']);
  assert.deepEqual(groupsFrom(undefined), []);
});
