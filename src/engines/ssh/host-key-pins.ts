// The host keys a connection pins for its SSH target, known_hosts style: one or more public keys
// ("ssh-rsa AAAA…", with or without the host field ssh-keyscan prints first) or SHA256
// fingerprints ("SHA256:…", as `ssh-keygen -l` prints them). Fingerprints are resolved to the
// target's full keys when the connection is registered, so what is stored, and what a session
// checks, is always a list of full keys; the key types of that list decide which host-key
// algorithms the gateway offers, so that the target presents a pinned key and not another one it
// happens to prefer (the false "host key has changed" alarm of a target pinned by its RSA key).
import { parsePublicKeyLine, type PublicKeyInfo } from './keys.ts';
import { keyTypeOfBlob } from './wire.ts';

export type HostKeyPin = { kind: 'key'; key: PublicKeyInfo } | { kind: 'fingerprint'; fingerprint: string };

/**
 * Host key types the gateway can verify, each with the signature algorithms that present such a
 * key, in the order they are offered (strongest first; ssh-rsa is SHA-1, kept last for old servers).
 */
const ALGORITHMS_BY_KEY_TYPE: ReadonlyMap<string, readonly string[]> = new Map([
  ['ssh-ed25519', ['ssh-ed25519']],
  ['ecdsa-sha2-nistp256', ['ecdsa-sha2-nistp256']],
  ['ecdsa-sha2-nistp384', ['ecdsa-sha2-nistp384']],
  ['ecdsa-sha2-nistp521', ['ecdsa-sha2-nistp521']],
  ['ssh-rsa', ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']],
]);

export const HOST_KEY_TYPES: readonly string[] = [...ALGORITHMS_BY_KEY_TYPE.keys()];

/** The serverHostKey algorithms that make a target present one of these keys, in preference order. */
export function hostKeyAlgorithms(keyTypes: Iterable<string>): string[] {
  const wanted = new Set(keyTypes);
  return HOST_KEY_TYPES.filter((t) => wanted.has(t)).flatMap((t) => ALGORITHMS_BY_KEY_TYPE.get(t)!);
}

/** The serverHostKey algorithms that present a key of this one type (for probing each type in turn). */
export function algorithmsOfKeyType(keyType: string): string[] {
  return [...(ALGORITHMS_BY_KEY_TYPE.get(keyType) ?? [])];
}

const MAX_PINS = 16;
const FINGERPRINT = /^SHA256:([A-Za-z0-9+/]{43})=?$/;

/**
 * Parses pins from one or more texts (each may hold several lines); throws an Error whose message
 * names the offending line. Blank lines and # comments (ssh-keyscan prints some) are skipped;
 * duplicates are dropped.
 */
export function parseHostKeyPins(texts: string | readonly string[]): HostKeyPin[] {
  const lines = (typeof texts === 'string' ? [texts] : texts).flatMap((t) => t.split(/\r?\n/))
    .map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length === 0) throw new Error('no host key given (expected "ssh-ed25519 AAAA…", a known_hosts / ssh-keyscan line, or a fingerprint "SHA256:…")');
  const pins: HostKeyPin[] = [];
  const seen = new Set<string>();
  for (const [i, line] of lines.entries()) {
    const where = lines.length > 1 ? `line ${i + 1} ("${abbreviate(line)}")` : `"${abbreviate(line)}"`;
    let pin: HostKeyPin;
    try {
      pin = parsePinLine(line);
    } catch (err) {
      throw new Error(`${where}: ${(err as Error).message}`);
    }
    const id = pinText(pin);
    if (seen.has(id)) continue;
    seen.add(id);
    pins.push(pin);
  }
  if (pins.length > MAX_PINS) throw new Error(`at most ${MAX_PINS} host keys can be pinned (${pins.length} given)`);
  return pins;
}

/** The stored form of a pin: "type base64" or "SHA256:…". */
export function pinText(pin: HostKeyPin): string {
  return pin.kind === 'key' ? pin.key.line : pin.fingerprint;
}

/** Only full keys: what a stored connection holds (fingerprints were resolved at registration). */
export function pinnedKeys(stored: string): PublicKeyInfo[] {
  const pins = parseHostKeyPins(stored);
  const unresolved = pins.find((p) => p.kind === 'fingerprint');
  if (unresolved) throw new Error(`the fingerprint ${pinText(unresolved)} was never resolved to a key`);
  return pins.map((p) => (p as { kind: 'key'; key: PublicKeyInfo }).key);
}

/** "SHA256:x (ssh-rsa)" for messages; a fingerprint pin is its fingerprint. */
export function describePin(pin: HostKeyPin | PublicKeyInfo): string {
  if ('kind' in pin) return pin.kind === 'key' ? describePin(pin.key) : pin.fingerprint;
  return `${pin.fingerprint} (${pin.type})`;
}

function parsePinLine(line: string): HostKeyPin {
  const tokens = line.split(/\s+/);
  if (tokens[0]!.startsWith('@')) {
    throw new Error(`known_hosts markers such as ${tokens[0]} are not supported: pin the target's own host keys`);
  }
  // A fingerprint alone, or a line of `ssh-keygen -l` output ("256 SHA256:… comment (ED25519)").
  const fpToken = tokens.slice(0, 2).find((t) => /^(SHA256|MD5|SHA1|SHA384|SHA512):/i.test(t));
  if (fpToken) return { kind: 'fingerprint', fingerprint: parseFingerprint(fpToken) };
  if (/^([0-9a-f]{2}:){15}[0-9a-f]{2}$/i.test(tokens[0]!)) throw new Error('MD5 fingerprints are not accepted: give the SHA256 one (`ssh-keygen -l -E sha256 -f …`)');
  // "type base64 [comment]", or "host type base64 [comment]" as in known_hosts and ssh-keyscan.
  const at = tokens.length > 1 && looksLikeKeyType(tokens[1]!) && !looksLikeKeyType(tokens[0]!) ? 1 : 0;
  const type = tokens[at]!;
  const base64 = tokens[at + 1];
  if (!looksLikeKeyType(type) || base64 === undefined) {
    throw new Error('not a host key: expected "ssh-ed25519 AAAA…" (optionally after a host field, as in known_hosts and ssh-keyscan output) or a fingerprint "SHA256:…"');
  }
  if (/-cert-v\d\d@openssh\.com$/.test(type)) throw new Error(`${type} is a host certificate, which is not supported: pin the host key itself`);
  if (type.startsWith('rsa-sha2-')) throw new Error(`${type} is a signature algorithm; an RSA key's line says ssh-rsa`);
  if (type === 'ssh-dss') throw new Error('DSA host keys are not accepted (1024-bit, SHA-1): pin one of the target\'s other keys');
  if (!ALGORITHMS_BY_KEY_TYPE.has(type)) throw new Error(`${type} host keys are not supported: pin a key of type ${HOST_KEY_TYPES.join(', ')}`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) throw new Error('the key is not base64');
  const blobType = keyTypeOfBlob(Buffer.from(base64, 'base64'));
  if (blobType !== type) throw new Error(`the line says ${type} but the key inside is ${blobType}`);
  return { kind: 'key', key: parsePublicKeyLine(`${type} ${base64}`) };
}

function parseFingerprint(token: string): string {
  const m = FINGERPRINT.exec(token);
  if (!m) {
    if (/^SHA256:/i.test(token)) throw new Error('a SHA256 fingerprint is "SHA256:" and 43 base64 characters, as `ssh-keygen -l` prints it');
    throw new Error(`${token.split(':')[0]} fingerprints are not accepted: give the SHA256 one (\`ssh-keygen -l -E sha256 -f …\`)`);
  }
  return `SHA256:${m[1]}`;
}

function looksLikeKeyType(token: string): boolean {
  return /^(ssh-|ecdsa-|sk-|rsa-|x509v3-)[A-Za-z0-9@.-]+$/.test(token);
}

function abbreviate(line: string): string {
  const clean = line.replace(/[\x00-\x1f\x7f]/g, '?');
  return clean.length > 40 ? `${clean.slice(0, 37)}…` : clean;
}
