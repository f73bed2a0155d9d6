// The `sso` block of gatehouse.yaml: the identity providers people sign in with (OIDC and SAML),
// the gateway's public URL their answers come back to, and how long a sign-in lasts.
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseDuration } from '../../util/duration.ts';
import { checkIssuerUrl } from '../workload/config.ts';

export interface OidcProviderConfig {
  name: string;
  /** Compared exactly with the discovery document's and the ID token's `iss`. */
  issuer: string;
  clientId: string;
  /** Absent: a public client (PKCE only, no client authentication). */
  clientSecret?: string;
  scopes: string[];
  /** The claim that names the identity (psql's user name). */
  usernameClaim: string;
  /** The claim holding the person's groups (a list of strings, or one string). */
  groupsClaim?: string;
  clockSkewSeconds: number;
}

export interface SamlProviderConfig {
  name: string;
  /** The IdP's single sign-on URL (HTTP-Redirect binding). */
  entryPoint: string;
  /** PEM certificates whose keys may sign assertions (several during a rollover). */
  idpCerts: string[];
  /** When set, the assertion's Issuer must be exactly this. */
  idpEntityId?: string;
  /** The gateway's entity id at this IdP (the assertion's audience); default <public_url>/login/saml/metadata. */
  spEntityId?: string;
  /** Absent: the NameID names the identity. */
  usernameAttribute?: string;
  groupsAttribute?: string;
  clockSkewSeconds: number;
  /** Also require a signature over the whole Response (the assertion must be signed regardless). */
  wantResponseSigned: boolean;
}

export interface SsoConfig {
  /** The gateway's external URL (redirect and ACS URLs); absent: the HTTP listener's address. */
  publicUrl?: string;
  tokenTtlSeconds: number;
  /** How long a started sign-in waits for the person to finish it in the browser. */
  loginTimeoutSeconds: number;
  defaultProvider?: string;
  oidc: OidcProviderConfig[];
  saml: SamlProviderConfig[];
}

export const MAX_SSO_TOKEN_TTL_S = 24 * 3600;
const DEFAULT_TOKEN_TTL_S = 8 * 3600;

export function defaultSsoConfig(): SsoConfig {
  return { tokenTtlSeconds: DEFAULT_TOKEN_TTL_S, loginTimeoutSeconds: 600, oidc: [], saml: [] };
}

const PROVIDER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

type Yaml = Record<string, unknown>;

function mapping(raw: unknown, at: string): Yaml {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${at} must be a mapping`);
  return raw as Yaml;
}

function onlyKnown(doc: Yaml, known: string[], at: string): void {
  for (const key of Object.keys(doc)) if (!known.includes(key)) throw new Error(`${at}: unknown setting "${key}"`);
}

function requiredText(doc: Yaml, key: string, at: string): string {
  const v = doc[key];
  if (typeof v !== 'string' || v.trim() === '') throw new Error(`${at}: ${key} is required`);
  return v.trim();
}

function optionalText(doc: Yaml, key: string, at: string): string | undefined {
  const v = doc[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.trim() === '') throw new Error(`${at}: ${key} must be a non-empty string`);
  return v.trim();
}

function claimName(doc: Yaml, key: string, at: string, fallback?: string): string | undefined {
  const v = optionalText(doc, key, at) ?? fallback;
  // Claim and attribute names end up as claim names of the identity; SAML ones are often URIs.
  if (v !== undefined && !/^[\x21-\x7e]{1,256}$/.test(v)) throw new Error(`${at}: ${key} "${v}" is not a claim or attribute name`);
  return v;
}

function skew(doc: Yaml, at: string): number {
  if (doc.clock_skew === undefined) return 30;
  try {
    return parseDuration(String(doc.clock_skew), 300);
  } catch (err) {
    throw new Error(`${at}: clock_skew: ${(err as Error).message}`);
  }
}

function parseOidc(raw: unknown, index: number, env: NodeJS.ProcessEnv): OidcProviderConfig {
  const doc = mapping(raw, `sso.oidc[${index}]`);
  const name = String(doc.name ?? '');
  const at = `sso.oidc[${index}]${name ? ` ("${name}")` : ''}`;
  onlyKnown(doc, ['name', 'issuer', 'client_id', 'client_secret', 'client_secret_env', 'scopes', 'username_claim', 'groups_claim', 'clock_skew'], at);
  if (!PROVIDER_NAME.test(name)) throw new Error(`${at}: name is required (letters, digits, . _ -)`);
  const issuer = checkIssuerUrl(requiredText(doc, 'issuer', at), `${at}: issuer`);
  const clientId = requiredText(doc, 'client_id', at);
  if (doc.client_secret !== undefined && doc.client_secret_env !== undefined) throw new Error(`${at}: give client_secret or client_secret_env, not both`);
  let clientSecret = optionalText(doc, 'client_secret', at);
  const secretEnv = optionalText(doc, 'client_secret_env', at);
  if (secretEnv !== undefined) {
    clientSecret = env[secretEnv];
    if (!clientSecret) throw new Error(`${at}: client_secret_env names ${secretEnv}, which is not set`);
  }
  const scopes = doc.scopes === undefined ? ['openid', 'profile', 'email'] : (Array.isArray(doc.scopes) ? doc.scopes : String(doc.scopes).split(/\s+/)).map(String);
  if (!scopes.includes('openid')) throw new Error(`${at}: scopes must include openid`);
  if (scopes.some((s) => !/^[\x21\x23-\x5b\x5d-\x7e]+$/.test(s))) throw new Error(`${at}: scopes hold a character a scope may not`);
  return {
    name, issuer, clientId, clientSecret, scopes, clockSkewSeconds: skew(doc, at),
    usernameClaim: claimName(doc, 'username_claim', at, 'preferred_username')!, groupsClaim: claimName(doc, 'groups_claim', at),
  };
}

/** idp_cert: PEM text, or a file holding it (relative to the configuration file); one or a list. */
function readCerts(raw: unknown, at: string, baseDir: string): string[] {
  const items = Array.isArray(raw) ? raw : [raw];
  if (raw === undefined || raw === null || items.length === 0) throw new Error(`${at}: idp_cert is required (the certificate the IdP signs with: PEM, or a file)`);
  return items.map((item) => {
    const text = String(item).trim();
    let pem = text;
    if (!text.includes('-----BEGIN')) {
      const file = path.resolve(baseDir, text);
      if (!existsSync(file)) throw new Error(`${at}: idp_cert "${text}" is neither a PEM certificate nor a file`);
      pem = readFileSync(file, 'utf8').trim();
    }
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new Error(`${at}: idp_cert is not a PEM certificate: ${(err as Error).message}`);
    }
    return pem;
  });
}

function parseSaml(raw: unknown, index: number, baseDir: string): SamlProviderConfig {
  const doc = mapping(raw, `sso.saml[${index}]`);
  const name = String(doc.name ?? '');
  const at = `sso.saml[${index}]${name ? ` ("${name}")` : ''}`;
  onlyKnown(doc, ['name', 'entry_point', 'idp_cert', 'idp_entity_id', 'sp_entity_id', 'username_attribute', 'groups_attribute', 'clock_skew', 'want_response_signed'], at);
  if (!PROVIDER_NAME.test(name)) throw new Error(`${at}: name is required (letters, digits, . _ -)`);
  const entryPoint = checkIssuerUrl(requiredText(doc, 'entry_point', at), `${at}: entry_point`);
  return {
    name, entryPoint, idpCerts: readCerts(doc.idp_cert, at, baseDir), idpEntityId: optionalText(doc, 'idp_entity_id', at),
    spEntityId: optionalText(doc, 'sp_entity_id', at), usernameAttribute: claimName(doc, 'username_attribute', at),
    groupsAttribute: claimName(doc, 'groups_attribute', at), clockSkewSeconds: skew(doc, at),
    wantResponseSigned: doc.want_response_signed === true || doc.want_response_signed === 'true',
  };
}

/** Parses and checks the YAML block; throws with the offending setting named. */
export function parseSso(raw: unknown, baseDir: string, env: NodeJS.ProcessEnv = process.env): SsoConfig {
  const cfg = defaultSsoConfig();
  if (raw === undefined || raw === null) return cfg;
  const doc = mapping(raw, 'sso');
  onlyKnown(doc, ['public_url', 'token_ttl', 'login_timeout', 'default_provider', 'oidc', 'saml'], 'sso');
  if (doc.public_url !== undefined) {
    const url = checkIssuerUrl(String(doc.public_url), 'sso.public_url');
    if (new URL(url).search) throw new Error('sso.public_url may not carry a query');
    cfg.publicUrl = url.replace(/\/+$/, '');
  }
  if (doc.token_ttl !== undefined) cfg.tokenTtlSeconds = parseDuration(String(doc.token_ttl), MAX_SSO_TOKEN_TTL_S);
  if (doc.login_timeout !== undefined) cfg.loginTimeoutSeconds = parseDuration(String(doc.login_timeout), 3600);
  for (const key of ['oidc', 'saml'] as const) if (doc[key] !== undefined && !Array.isArray(doc[key])) throw new Error(`sso.${key} must be a list`);
  cfg.oidc = ((doc.oidc as unknown[] | undefined) ?? []).map((p, i) => parseOidc(p, i, env));
  cfg.saml = ((doc.saml as unknown[] | undefined) ?? []).map((p, i) => parseSaml(p, i, baseDir));
  const names = new Set<string>();
  for (const p of [...cfg.oidc, ...cfg.saml]) {
    if (names.has(p.name)) throw new Error(`sso: two providers are named "${p.name}"`);
    names.add(p.name);
  }
  if (doc.default_provider !== undefined) {
    cfg.defaultProvider = String(doc.default_provider);
    if (!names.has(cfg.defaultProvider)) throw new Error(`sso.default_provider "${cfg.defaultProvider}" is not a provider`);
  }
  return cfg;
}
