// Whether the HTTP API is served over TLS, and with which certificate. Tokens, Git passwords,
// sign-in callbacks and connector enrollment secrets cross this listener, so plain HTTP is the
// default only on loopback; anywhere else TLS switches on by itself (the listeners' certificate,
// generated and kept in the data directory, unless another is configured), and plain HTTP needs
// both `tls: off` and `allow_plaintext` (behind a TLS-terminating proxy), with a loud warning.
import { readFileSync } from 'node:fs';
import type { ListenAddress } from '../util/address.ts';
import type { TlsMaterial } from './certificate.ts';
import { certificateFingerprint } from './fingerprint.ts';
import { isLoopbackHost } from './loopback.ts';

export type ApiTlsMode = 'auto' | 'on' | 'off';

export interface ApiTlsSettings {
  /** auto: TLS unless the API listens on loopback only (or a certificate is configured: always TLS). */
  mode: ApiTlsMode;
  /** The API's own certificate and key (PEM files); otherwise the listeners'. */
  cert?: string;
  key?: string;
  /** Serve plain HTTP on an address that is not loopback (mode off only). */
  allowPlaintext: boolean;
}

export interface ApiTlsDecision {
  scheme: 'http' | 'https';
  https?: { cert: string; key: string };
  /** SHA256:… of the certificate served, for clients and connectors to pin. */
  fingerprint?: string;
  /** Plain HTTP on a non-loopback address: say so loudly at every start. */
  warning?: string;
}

export function parseApiTlsMode(value: string, source: string): ApiTlsMode {
  const v = value.trim().toLowerCase();
  if (v === 'auto') return 'auto';
  if (['on', 'true', 'yes', '1'].includes(v)) return 'on';
  if (['off', 'false', 'no', '0'].includes(v)) return 'off';
  throw new Error(`config: ${source} must be auto, on or off (not "${value}")`);
}

export function decideApiTls(listen: ListenAddress, settings: ApiTlsSettings, listenerTls: TlsMaterial): ApiTlsDecision {
  if (Boolean(settings.cert) !== Boolean(settings.key)) throw new Error('config: the API certificate needs both http.cert and http.key');
  const loopback = isLoopbackHost(listen.host);
  const where = `${listen.host}:${listen.port}`;
  if (settings.mode === 'off') {
    if (settings.cert) throw new Error('config: http.tls is off but http.cert is set; remove one');
    if (loopback) return { scheme: 'http' };
    if (!settings.allowPlaintext) {
      throw new Error(`refusing to serve the API over plain HTTP on ${where}, which is not loopback: tokens and enrollment secrets would cross in cleartext. ` +
        'Leave http.tls at auto or on (the generated certificate is used), or, only behind a TLS-terminating proxy, set http.allow_plaintext (--http-allow-plaintext)');
    }
    return { scheme: 'http', warning: `the API serves PLAIN HTTP on ${where}, which is not loopback (http.allow_plaintext): bearer tokens, Git passwords, sign-in callbacks and connector enrollment tokens cross in cleartext unless a TLS-terminating proxy is the only way in` };
  }
  if (settings.mode === 'auto' && loopback && !settings.cert) return { scheme: 'http' };
  const material = settings.cert && settings.key
    ? { cert: readPem(settings.cert, 'http.cert'), key: readPem(settings.key, 'http.key') }
    : { cert: listenerTls.cert, key: listenerTls.key };
  return { scheme: 'https', https: material, fingerprint: certificateFingerprint(material.cert) };
}

function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`config: cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export function defaultApiTlsSettings(): ApiTlsSettings {
  return { mode: 'auto', allowPlaintext: false };
}

/**
 * gatehouse.yaml's `http`: an address ("0.0.0.0:8443"), or a section
 * `{ listen, tls: auto|on|off, cert, key, allow_plaintext }` (files relative to the config file).
 */
export function parseHttpSection(value: unknown, base: string, settings: ApiTlsSettings, resolve: (base: string, file: string) => string): string | undefined {
  if (value === null || typeof value !== 'object') return String(value);
  const doc = value as Record<string, unknown>;
  for (const key of Object.keys(doc)) {
    if (!['listen', 'tls', 'cert', 'key', 'allow_plaintext'].includes(key)) throw new Error(`config: unknown key http.${key} (expected listen, tls, cert, key, allow_plaintext)`);
  }
  if (doc.tls !== undefined) settings.mode = parseApiTlsMode(typeof doc.tls === 'boolean' ? (doc.tls ? 'on' : 'off') : String(doc.tls), 'http.tls');
  if (doc.cert) settings.cert = resolve(base, String(doc.cert));
  if (doc.key) settings.key = resolve(base, String(doc.key));
  if (doc.allow_plaintext !== undefined) settings.allowPlaintext = doc.allow_plaintext === true || /^(true|yes|on|1)$/i.test(String(doc.allow_plaintext));
  return doc.listen === undefined ? undefined : String(doc.listen);
}
