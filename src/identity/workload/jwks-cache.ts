// The trusted issuers' signing keys: fetched on first use (OIDC discovery unless a JWKS URL is
// configured), cached, refreshed when old, and refetched when a token names a key id the cache
// does not know — how issuers rotate keys — at most once per interval, so tokens with made-up key
// ids cannot turn the gateway into a fetch loop against the issuer.
import { createLocalJWKSet, errors, type CryptoKey, type JSONWebKeySet, type JWSHeaderParameters, type LocalJWKSet } from 'jose';
import { checkIssuerUrl } from './config.ts';
import { WorkloadRefusal, WorkloadUnavailable } from './errors.ts';

export interface JwksCacheOptions {
  timeoutMs: number;
  refetchIntervalMs: number;
  maxAgeMs: number;
  now?: () => number;
  /** Told about every fetch and its outcome (for the gateway log). */
  onFetch?: (event: { issuer: string; url: string; keys?: number; error?: string; reason: string }) => void;
}

interface Entry {
  issuer: string;
  configuredUrl: string | undefined;
  /** The JWKS URL found by discovery (or configured); re-discovered after a failed fetch. */
  jwksUrl: string | undefined;
  keys: LocalJWKSet | null;
  fetchedAt: number;
  /** Last fetch attempt, successful or not: the refetch rate limit counts from here. */
  attemptedAt: number;
  loading: Promise<void> | null;
}

/** JWKS documents are small; anything bigger is not one. */
const MAX_DOCUMENT_BYTES = 512 * 1024;

export class JwksCache {
  private readonly entries = new Map<string, Entry>();
  private readonly options: JwksCacheOptions;
  private readonly now: () => number;

  /** `issuers`: issuer → configured JWKS URL (undefined: discover it). */
  constructor(issuers: ReadonlyMap<string, string | undefined>, options: JwksCacheOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
    for (const [issuer, url] of issuers) {
      this.entries.set(issuer, { issuer, configuredUrl: url, jwksUrl: url, keys: null, fetchedAt: 0, attemptedAt: 0, loading: null });
    }
  }

  /** Keys of `issuer` that fit the token header (several when it names no key id); refuses when none does. */
  async keysFor(issuer: string, header: JWSHeaderParameters): Promise<CryptoKey[]> {
    const entry = this.entries.get(issuer);
    if (!entry) throw new WorkloadRefusal(`issuer "${issuer}" is not trusted`);
    if (!entry.keys || this.now() - entry.fetchedAt >= this.options.maxAgeMs) await this.refresh(entry, entry.keys ? 'max age' : 'first use', entry.keys !== null);
    let found = await select(entry.keys!, header);
    if (found.length === 0 && this.now() - entry.attemptedAt >= this.options.refetchIntervalMs) {
      await this.refresh(entry, `unknown key ${header.kid ? `"${header.kid}"` : `for ${header.alg}`}`, true);
      found = await select(entry.keys!, header);
    }
    if (found.length === 0) {
      throw new WorkloadRefusal(`no signing key ${header.kid ? `"${header.kid}" ` : ''}for ${String(header.alg)} in the JWKS of issuer "${issuer}"`);
    }
    return found;
  }

  /** Fetches the key set once for every caller waiting; `keepStale`: a failure keeps the old keys. */
  private async refresh(entry: Entry, reason: string, keepStale: boolean): Promise<void> {
    entry.loading ??= this.load(entry, reason).finally(() => { entry.loading = null; });
    try {
      await entry.loading;
    } catch (err) {
      if (!keepStale || !entry.keys) throw err;
    }
  }

  private async load(entry: Entry, reason: string): Promise<void> {
    entry.attemptedAt = this.now();
    let url = entry.jwksUrl ?? entry.issuer;
    try {
      url = entry.jwksUrl ??= await this.discover(entry.issuer);
      const doc = await this.fetchJson(url);
      let keys: LocalJWKSet;
      try {
        keys = createLocalJWKSet(doc as JSONWebKeySet);
      } catch {
        throw new Error(`${url}: the document is not a JSON Web Key Set`);
      }
      entry.keys = keys;
      entry.fetchedAt = this.now();
      this.options.onFetch?.({ issuer: entry.issuer, url, keys: keys.jwks().keys.length, reason });
    } catch (err) {
      entry.jwksUrl = entry.configuredUrl; // discover again next time: the issuer may have moved its keys
      const message = (err as Error).message;
      this.options.onFetch?.({ issuer: entry.issuer, url, error: message, reason });
      throw new WorkloadUnavailable(`cannot fetch the signing keys of issuer "${entry.issuer}": ${message}`);
    }
  }

  /** OIDC discovery; issuers without it (some CI systems) serve their keys at /.well-known/jwks. */
  private async discover(issuer: string): Promise<string> {
    const base = issuer.replace(/\/+$/, '');
    const discovery = `${base}/.well-known/openid-configuration`;
    let doc: unknown;
    try {
      doc = await this.fetchJson(discovery);
    } catch (err) {
      if ((err as { status?: number }).status === 404) return `${base}/.well-known/jwks`;
      throw err;
    }
    const d = doc as { issuer?: unknown; jwks_uri?: unknown };
    // The discovery document must be the issuer's own (OpenID Connect Discovery §4.3).
    if (d.issuer !== issuer) throw new Error(`${discovery}: the discovery document names issuer "${String(d.issuer)}"`);
    if (typeof d.jwks_uri !== 'string') throw new Error(`${discovery}: the discovery document has no jwks_uri`);
    try {
      return checkIssuerUrl(d.jwks_uri, 'jwks_uri');
    } catch (err) {
      throw new Error(`${discovery}: ${(err as Error).message}`);
    }
  }

  private async fetchJson(url: string): Promise<unknown> {
    // Redirects are refused: keys come from the URL the configuration or the issuer named.
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(this.options.timeoutMs), redirect: 'error', headers: { accept: 'application/json' } });
    } catch (err) {
      const e = err as Error & { cause?: { message?: string } };
      throw new Error(`${url}: ${e.name === 'TimeoutError' ? `no answer within ${this.options.timeoutMs} ms` : e.cause?.message ?? e.message}`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw Object.assign(new Error(`${url}: HTTP ${res.status}`), { status: res.status });
    }
    const text = await res.text();
    if (text.length > MAX_DOCUMENT_BYTES) throw new Error(`${url}: the document is too large`);
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`${url}: the document is not JSON`);
    }
  }
}

/** The keys fitting `header`, by kid, algorithm and key type (jose's key-set rules). */
async function select(keys: LocalJWKSet, header: JWSHeaderParameters): Promise<CryptoKey[]> {
  try {
    return [await keys({ alg: header.alg, kid: header.kid })];
  } catch (err) {
    if (err instanceof errors.JWKSNoMatchingKey) return [];
    if (err instanceof errors.JWKSMultipleMatchingKeys) {
      const out: CryptoKey[] = [];
      for await (const key of err as unknown as AsyncIterable<CryptoKey>) out.push(key);
      return out;
    }
    throw new WorkloadRefusal(`the issuer's key ${header.kid ? `"${header.kid}" ` : ''}cannot be used: ${(err as Error).message}`);
  }
}
