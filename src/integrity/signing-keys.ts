// The gateway's Ed25519 signing keys. The private key lives in the data directory (0600), or is
// given by GATEHOUSE_SIGNING_KEY_FILE; public keys are kept in the store forever, so a rotation
// never makes older recordings unverifiable.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Key id: the first 16 bytes of SHA-256 over the raw 32-byte public key, hex. */
export function keyIdOf(publicKey: KeyObject): string {
  const der = publicKey.export({ format: 'der', type: 'spki' });
  return createHash('sha256').update(der.subarray(der.length - 32)).digest('hex').slice(0, 32);
}

export class SigningKey {
  readonly keyId: string;
  readonly publicKeyPem: string;
  private readonly privateKey: KeyObject;

  constructor(privateKey: KeyObject) {
    if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('the signing key must be Ed25519');
    this.privateKey = privateKey;
    const pub = createPublicKey(privateKey);
    this.keyId = keyIdOf(pub);
    this.publicKeyPem = pub.export({ format: 'pem', type: 'spki' }).toString();
  }

  sign(payload: string): string {
    return sign(null, Buffer.from(payload, 'utf8'), this.privateKey).toString('base64');
  }
}

export function verifySignature(publicKeyPem: string, payload: string, signatureB64: string): boolean {
  try {
    return verify(null, Buffer.from(payload, 'utf8'), createPublicKey(publicKeyPem), Buffer.from(signatureB64, 'base64'));
  } catch {
    return false;
  }
}

/**
 * Loads the newest key in `dir` (files key-<created ms>.pem), or creates the first one.
 * `rotate` adds a new key that becomes current; old files stay so operators can archive them.
 */
export function loadSigningKey(dir: string, configuredFile?: string): SigningKey {
  if (configuredFile) return new SigningKey(createPrivateKey(readFileSync(configuredFile)));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => /^key-\d+\.pem$/.test(f)).sort() : [];
  if (files.length === 0) return rotateSigningKey(dir);
  return new SigningKey(createPrivateKey(readFileSync(path.join(dir, files[files.length - 1]))));
}

export function rotateSigningKey(dir: string): SigningKey {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('ed25519');
  const file = path.join(dir, `key-${String(Date.now()).padStart(15, '0')}.pem`);
  writeFileSync(file, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return new SigningKey(privateKey);
}
