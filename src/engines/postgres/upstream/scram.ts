// SCRAM-SHA-256 client side (RFC 5802 / RFC 7677) as PostgreSQL uses it: the user name in the
// SCRAM exchange is empty because the server takes it from the startup packet.
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

const pbkdf2Async = promisify(pbkdf2);

/**
 * Most PBKDF2 rounds a target may ask for. PostgreSQL's default is 4096; a hostile target asking
 * for 2^31 would otherwise hold a CPU for minutes per login. (The work runs on libuv's pool, not
 * the event loop, either way.)
 */
export const MAX_SCRAM_ITERATIONS = 1_000_000;

export class ScramClient {
  private readonly password: string;
  private readonly nonce = randomBytes(18).toString('base64');
  private clientFirstBare = '';
  private serverSignature: Buffer | null = null;
  private readonly saltedCache?: Map<string, Buffer>;
  private unverified: { key: string; salted: Buffer } | null = null;

  /**
   * `saltedCache` remembers PBKDF2 output so repeated logins are cheap. Its key covers the
   * password as well as the salt, and an entry is only kept once the server has proven it
   * knows the same password: a wrong or stale credential can never reuse a right one's key.
   */
  constructor(password: string, saltedCache?: Map<string, Buffer>) {
    this.password = password;
    this.saltedCache = saltedCache;
  }

  clientFirst(): Buffer {
    this.clientFirstBare = `n=,r=${this.nonce}`;
    return Buffer.from(`n,,${this.clientFirstBare}`);
  }

  async clientFinal(serverFirst: string): Promise<Buffer> {
    const attrs = parseAttributes(serverFirst);
    const nonce = attrs.get('r');
    const salt = attrs.get('s');
    const iterations = Number(attrs.get('i'));
    if (!nonce || !salt || !Number.isInteger(iterations) || iterations < 1) throw new Error('malformed SCRAM server-first message');
    if (iterations > MAX_SCRAM_ITERATIONS) throw new Error(`target asks for ${iterations} SCRAM iterations; the gateway allows at most ${MAX_SCRAM_ITERATIONS}`);
    if (!nonce.startsWith(this.nonce)) throw new Error('SCRAM server nonce does not extend the client nonce');
    const cacheKey = `${createHash('sha256').update(this.password).digest('base64')}:${salt}:${iterations}`;
    let salted = this.saltedCache?.get(cacheKey);
    if (!salted) {
      salted = await pbkdf2Async(this.password.normalize('NFKC'), Buffer.from(salt, 'base64'), iterations, 32, 'sha256');
      this.unverified = { key: cacheKey, salted };
    }
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = createHash('sha256').update(clientKey).digest();
    const finalWithoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${finalWithoutProof}`;
    const clientSignature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(clientKey.length);
    for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i] ^ clientSignature[i];
    this.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    return Buffer.from(`${finalWithoutProof},p=${proof.toString('base64')}`);
  }

  /** The server proved it knows the password (its final message carried the right signature). */
  verified = false;

  /** Proves the server also knew the password; a mismatch means we talked to an impostor. */
  verifyServerFinal(serverFinal: string): void {
    const v = parseAttributes(serverFinal).get('v');
    if (!v || !this.serverSignature) throw new Error('malformed SCRAM server-final message');
    const got = Buffer.from(v, 'base64');
    if (got.length !== this.serverSignature.length || !timingSafeEqual(got, this.serverSignature)) {
      throw new Error('SCRAM server signature does not match');
    }
    this.verified = true;
    if (this.unverified && this.saltedCache) {
      if (this.saltedCache.size > 1000) this.saltedCache.clear(); // bounded: one entry per credential and salt
      this.saltedCache.set(this.unverified.key, this.unverified.salted);
    }
  }
}

function hmac(key: Buffer, text: string): Buffer {
  return createHmac('sha256', key).update(text).digest();
}

function parseAttributes(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return out;
}
