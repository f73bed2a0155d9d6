// The gateway's private certificate authority for connectors: it signs each connector's client
// certificate at enrollment and the tunnel listener's server certificate, so both ends of a
// tunnel authenticate each other without any public PKI. Connectors pin the CA certificate.
import 'reflect-metadata'; // required by @peculiar/x509's dependency injection container
import * as x509 from '@peculiar/x509';
import { randomBytes, webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const crypto = webcrypto as unknown as Crypto;
x509.cryptoProvider.set(crypto);
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86400_000;

export interface PemPair { cert: string; key: string }

export interface ConnectorCa {
  certPem: string;
  keys: webcrypto.CryptoKeyPair;
  cert: x509.X509Certificate;
}

function serial(): string {
  return '01' + randomBytes(15).toString('hex'); // positive, 128 bits
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', key);
  return `-----BEGIN PRIVATE KEY-----\n${Buffer.from(pkcs8).toString('base64').replace(/(.{64})/g, '$1\n').trimEnd()}\n-----END PRIVATE KEY-----\n`;
}

async function importKeyPem(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return crypto.subtle.importKey('pkcs8', der, ALG, true, ['sign']);
}

export async function loadOrCreateCa(dir: string): Promise<ConnectorCa> {
  const certFile = path.join(dir, 'connector-ca.pem');
  const keyFile = path.join(dir, 'connector-ca.key');
  if (existsSync(certFile) && existsSync(keyFile)) {
    const cert = new x509.X509Certificate(readFileSync(certFile, 'utf8'));
    const privateKey = await importKeyPem(readFileSync(keyFile, 'utf8'));
    return { certPem: cert.toString('pem') + '\n', cert, keys: { privateKey, publicKey: await cert.publicKey.export(ALG, ['verify']) } };
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keys = await crypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(), name: 'CN=Gatehouse connector CA', notBefore: new Date(now - 60_000), notAfter: new Date(now + 10 * 365 * DAY),
    signingAlgorithm: ALG, keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  writeFileSync(keyFile, await exportKeyPem(keys.privateKey), { mode: 0o600 });
  writeFileSync(certFile, cert.toString('pem') + '\n');
  return { certPem: cert.toString('pem') + '\n', cert, keys };
}

/** The tunnel listener's certificate, issued by the connector CA (regenerated when missing). */
export async function loadOrIssueTunnelCert(ca: ConnectorCa, dir: string, dnsNames: string[], ips: string[]): Promise<PemPair> {
  const certFile = path.join(dir, 'tunnel.pem');
  const keyFile = path.join(dir, 'tunnel.key');
  if (existsSync(certFile) && existsSync(keyFile)) return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
  const keys = await crypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(), subject: 'CN=Gatehouse tunnel', issuer: ca.cert.subject, notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 2 * 365 * DAY), signingAlgorithm: ALG, publicKey: keys.publicKey, signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([...dnsNames.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))]),
    ],
  });
  const pair = { cert: cert.toString('pem') + '\n', key: await exportKeyPem(keys.privateKey) };
  writeFileSync(keyFile, pair.key, { mode: 0o600 });
  writeFileSync(certFile, pair.cert);
  return pair;
}

/** Signs a connector's CSR. The subject is set by the gateway, never taken from the request. */
export async function signConnectorCsr(ca: ConnectorCa, csrPem: string, connectorName: string): Promise<{ certPem: string; serial: string }> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw new Error('the certificate request is not a PKCS#10 CSR');
  }
  if (!(await csr.verify())) throw new Error('the certificate request is not signed by its own key');
  const now = Date.now();
  const serialNumber = serial();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber, subject: `CN=${connectorNameToCn(connectorName)}`, issuer: ca.cert.subject, notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 365 * DAY), signingAlgorithm: ALG, publicKey: csr.publicKey, signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', serial: serialNumber };
}

export const connectorNameToCn = (name: string): string => `connector:${name}`;

/** Connector side: a fresh key pair and a CSR for it (the private key never leaves the connector). */
export async function createKeyAndCsr(connectorName: string): Promise<{ keyPem: string; csrPem: string }> {
  const keys = await crypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${connectorNameToCn(connectorName)}`, keys, signingAlgorithm: ALG });
  return { keyPem: await exportKeyPem(keys.privateKey), csrPem: csr.toString('pem') };
}
