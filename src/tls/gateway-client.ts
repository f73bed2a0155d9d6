// How the CLI and the connector reach the gateway's API: https verified against the system's CAs,
// a CA file, or a pinned certificate fingerprint; plain http only to loopback unless the caller
// insists. With a pin, the TLS handshake is finished and the certificate compared before the
// connection is handed to HTTP, so nothing (no token, no enrollment secret) is sent to a gateway
// with another certificate.
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { readFileSync } from 'node:fs';
import { createHash, timingSafeEqual } from 'node:crypto';
import { formatFingerprint, parseFingerprint } from './fingerprint.ts';
import { isLoopbackHost } from './loopback.ts';

export interface GatewayTrust {
  /** PEM file of the CA (or the self-signed certificate) that must have issued the gateway's certificate. */
  caFile?: string;
  /** SHA256:… of the gateway's certificate: the only certificate accepted, whoever issued it. */
  fingerprint?: string;
  /** Allow plain http to an address that is not loopback (tokens then cross in cleartext). */
  insecureHttp?: boolean;
}

const CONNECT_TIMEOUT_MS = 30_000;

/** A refusal to talk to the gateway for reasons of trust: said once, clearly, nothing retried. */
export class GatewayTrustError extends Error {}

export interface GatewayResponse { status: number; text: string }

/** Refuses URLs the trust settings cannot protect; returns the parsed URL. */
export function checkGatewayUrl(gateway: string, trust: GatewayTrust): URL {
  let url: URL;
  try {
    url = new URL(gateway);
  } catch {
    throw new GatewayTrustError(`the gateway URL "${gateway}" is not a URL (expected https://HOST:PORT)`);
  }
  if (url.protocol === 'https:') {
    if (trust.fingerprint) parseFingerprint(trust.fingerprint);
    return url;
  }
  if (url.protocol !== 'http:') throw new GatewayTrustError(`the gateway URL must start with https:// (or http:// on loopback), not ${url.protocol}`);
  if (trust.fingerprint || trust.caFile) {
    throw new GatewayTrustError(`a gateway fingerprint or CA file needs an https:// gateway URL; ${url.origin} is plain http`);
  }
  if (!isLoopbackHost(url.hostname) && !trust.insecureHttp) {
    throw new GatewayTrustError(`refusing plain http to ${url.host}: tokens would cross the network in cleartext; use the gateway's https:// URL ` +
      '(with --gateway-fingerprint or --gateway-ca), or pass --insecure-http if the network is yours');
  }
  return url;
}

/** One HTTP request to the gateway under `trust`; `timeoutMs` (default 5 min) bounds each silence. */
export async function gatewayRequest(gateway: string, path: string, init: { method: string; headers?: Record<string, string>; body?: string; timeoutMs?: number }, trust: GatewayTrust): Promise<GatewayResponse> {
  const base = checkGatewayUrl(gateway, trust);
  const url = new URL(base.pathname.replace(/\/+$/, '') + path, base);
  const pin = base.protocol === 'https:' && trust.fingerprint ? parseFingerprint(trust.fingerprint) : undefined;
  const ca = base.protocol === 'https:' && trust.caFile && !pin ? readCaFile(trust.caFile) : undefined;
  const body = init.body !== undefined ? Buffer.from(init.body) : undefined;
  const headers = { ...init.headers, ...(body ? { 'content-length': String(body.length) } : {}) };
  return new Promise<GatewayResponse>((resolve, reject) => {
    const options: https.RequestOptions = { method: init.method, headers, timeout: init.timeoutMs ?? 300_000 };
    // No agent with a pin: http then uses our connection, handed over only once the pin matched.
    if (pin) options.createConnection = (_o, done) => { pinnedConnection(url, pin, done); return undefined; };
    else options.agent = false;
    if (ca) options.ca = ca;
    const req = (url.protocol === 'https:' ? https : http).request(url, options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer in time')));
    req.on('error', (err) => reject(describeTlsFailure(err, url, trust)));
    req.end(body);
  });
}

function readCaFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new GatewayTrustError(`cannot read the gateway CA file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * TLS to the gateway, accepted only if its certificate hashes to `pin`. The chain is not checked
 * (the pin is the identity, a self-signed certificate is fine) and neither is the name.
 */
function pinnedConnection(url: URL, pin: Buffer, done: (err: Error | null, socket: Duplex) => void): void {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const socket = tls.connect({
    host, port: Number(url.port || 443), servername: net.isIP(host) ? undefined : host,
    rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], minVersion: 'TLSv1.2',
  });
  let settled = false;
  // A silent address must not hang the command before the pin is even checked.
  socket.setTimeout(CONNECT_TIMEOUT_MS, () => finish(new Error(`no TLS answer from ${url.host} in ${CONNECT_TIMEOUT_MS / 1000} s`)));
  const finish = (err: Error | null): void => {
    if (settled) return;
    settled = true;
    socket.setTimeout(0);
    // Closed politely (close_notify after our Finished), never with application data.
    if (err) socket.destroySoon();
    done(err, socket);
  };
  socket.once('secureConnect', () => {
    const der = socket.getPeerCertificate(false)?.raw;
    const seen = der ? createHash('sha256').update(der).digest() : Buffer.alloc(0);
    if (seen.length !== pin.length || !timingSafeEqual(seen, pin)) {
      finish(new GatewayTrustError(`the gateway at ${url.host} presented certificate ${der ? formatFingerprint(seen) : '(none)'}, not the pinned ${formatFingerprint(pin)}: ` +
        'refused before sending anything (another server, or someone in between; check the fingerprint with the gateway\'s operator)'));
      return;
    }
    finish(null);
  });
  socket.once('error', (err) => finish(err));
}

/** Turns TLS verification failures into what to do about them. */
function describeTlsFailure(err: Error, url: URL, trust: GatewayTrust): Error {
  if (err instanceof GatewayTrustError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (/SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY_LEAF|CERT_UNTRUSTED|CERT_SIGNATURE_FAILURE/.test(code)) {
    return new GatewayTrustError(`cannot verify the gateway's certificate at ${url.host} (${code})${trust.caFile ? ` against ${trust.caFile}` : ''}: ` +
      'pin it with --gateway-fingerprint SHA256:… (printed by `gatehouse up`) or trust its CA with --gateway-ca FILE');
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new GatewayTrustError(`the gateway's certificate is not valid for ${url.hostname}: use a name it lists, or pin it with --gateway-fingerprint`);
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return new GatewayTrustError(`the gateway's certificate at ${url.host} is not valid now (${code})`);
  return err;
}
