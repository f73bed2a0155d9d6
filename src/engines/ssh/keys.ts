// SSH key handling shared by the engine, the API and the CLI: parsing OpenSSH public key lines,
// fingerprints as OpenSSH prints them, and the gateway's persisted host key.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ssh2 from 'ssh2';

const { utils } = ssh2;

export interface PublicKeyInfo {
  /** Key type as in the line, e.g. "ssh-ed25519". */
  type: string;
  /** The wire-format key blob. */
  blob: Buffer;
  /** "SHA256:<base64 without padding>", as `ssh-keygen -l` prints it. */
  fingerprint: string;
  /** "type base64" without the comment: the canonical form stored and compared. */
  line: string;
}

export function fingerprintOf(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/** Parses one OpenSSH public key line ("ssh-ed25519 AAAA… comment"); throws with a clear message. */
export function parsePublicKeyLine(text: string): PublicKeyInfo {
  const line = text.split(/\r?\n/).map((l) => l.trim()).find((l) => l && !l.startsWith('#'));
  if (!line) throw new Error('no public key found (expected a line like "ssh-ed25519 AAAA… comment")');
  const parsed = utils.parseKey(line);
  if (parsed instanceof Error) throw new Error(`not an SSH public key: ${parsed.message}`);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key) throw new Error('not an SSH public key');
  if (key.isPrivateKey()) throw new Error('this is a private key; give the public key (.pub) instead');
  return publicKeyInfo(key.type, key.getPublicSSH());
}

export function publicKeyInfo(type: string, blob: Buffer): PublicKeyInfo {
  return { type, blob, fingerprint: fingerprintOf(blob), line: `${type} ${blob.toString('base64')}` };
}

/** Checks that a private key (PEM or OpenSSH format, unencrypted) parses; returns its public line. */
export function checkPrivateKey(text: string): PublicKeyInfo {
  const parsed = utils.parseKey(text);
  if (parsed instanceof Error) throw new Error(`cannot read the private key: ${parsed.message}`);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || !key.isPrivateKey()) throw new Error('the key file does not hold a private key');
  return publicKeyInfo(key.type, key.getPublicSSH());
}

/** The gateway's SSH host key: generated on first start (Ed25519), kept 0600 in the data directory. */
export function loadOrCreateHostKey(dir: string): { privateKey: string; publicKey: PublicKeyInfo } {
  const file = path.join(dir, 'ssh_host_ed25519_key');
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const pair = generateHostKeyPair();
    writeFileSync(file, pair.private, { mode: 0o600, flag: 'wx' });
    writeFileSync(file + '.pub', pair.public + '\n', { mode: 0o644 });
  }
  const privateKey = readFileSync(file, 'utf8');
  try {
    return { privateKey, publicKey: checkPrivateKey(privateKey) };
  } catch (err) {
    // Not replaced silently: a new host key is something every client notices and should be told about.
    throw new Error(`the SSH host key ${file} cannot be read (${(err as Error).message}); move it aside to have a new one generated, and tell clients its new fingerprint`);
  }
}

/**
 * An Ed25519 pair that reads back. ssh2's generator strips leading zero bytes of the public key,
 * so about one key in 256 comes out 31 bytes long and cannot be parsed again (mscdex/ssh2#1390,
 * #1513): generate until both halves read back.
 */
export function generateHostKeyPair(): { private: string; public: string } {
  for (let attempt = 0; attempt < 32; attempt++) {
    const pair = utils.generateKeyPairSync('ed25519', { comment: 'gatehouse' });
    if (!(utils.parseKey(pair.private) instanceof Error) && !(utils.parseKey(pair.public) instanceof Error)) return pair;
  }
  throw new Error('could not generate a readable SSH host key');
}
