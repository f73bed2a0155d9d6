import { webcrypto } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import 'reflect-metadata'; // required by @peculiar/x509's dependency injection container
import * as x509 from '@peculiar/x509';

export interface TlsMaterial { cert: string; key: string; generated: boolean }

/**
 * Loads the listener certificate, or generates a self-signed ECDSA P-256 one on first start and
 * keeps it in the data directory, so clients can pin it across restarts.
 */
export async function loadOrCreateTls(dir: string, configured?: { cert?: string; key?: string }): Promise<TlsMaterial> {
  if (configured?.cert && configured.key) {
    return { cert: readFileSync(configured.cert, 'utf8'), key: readFileSync(configured.key, 'utf8'), generated: false };
  }
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  if (existsSync(certFile) && existsSync(keyFile)) {
    return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), generated: false };
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { cert, key } = await generateSelfSigned(['localhost', os.hostname()], ['127.0.0.1', '::1']);
  writeFileSync(keyFile, key, { mode: 0o600 });
  writeFileSync(certFile, cert, { mode: 0o644 });
  return { cert, key, generated: true };
}

async function generateSelfSigned(dnsNames: string[], ips: string[]): Promise<{ cert: string; key: string }> {
  const crypto = webcrypto as unknown as Crypto;
  x509.cryptoProvider.set(crypto);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await crypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1'),
    name: 'CN=Gatehouse gateway',
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + 5 * 365 * 86400_000),
    signingAlgorithm: alg,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
        ...ips.map((value) => ({ type: 'ip' as const, value })),
      ]),
    ],
  });
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${Buffer.from(pkcs8).toString('base64').replace(/(.{64})/g, '$1\n').trimEnd()}\n-----END PRIVATE KEY-----\n`;
  return { cert: cert.toString('pem') + '\n', key: keyPem };
}
