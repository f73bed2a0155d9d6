// Fetches a target's SSH host keys, so an operator can confirm one before it is pinned and so a
// pinned fingerprint can be resolved to its key. Like ssh-keyscan: one handshake per key type,
// each offering only that type's algorithms, since a single handshake shows only the key the
// target prefers. Nothing is authenticated: each handshake stops at the host key.
import ssh2 from 'ssh2';
import type { Dialer, Target } from '../../connector/dialer.ts';
import { publicKeyInfo, type PublicKeyInfo } from './keys.ts';
import { algorithmsOfKeyType, HOST_KEY_TYPES } from './host-key-pins.ts';
import { keyTypeOfBlob } from './wire.ts';

/** Every host key the target has of the types the gateway can pin, strongest type first. */
export async function probeHostKeys(dialer: Dialer, target: Target, timeoutMs = 10_000, keyTypes: readonly string[] = HOST_KEY_TYPES): Promise<PublicKeyInfo[]> {
  const results = await Promise.all(keyTypes.map((t) => probeOne(dialer, target, algorithmsOfKeyType(t), timeoutMs)));
  const failure = results.find((r): r is Error => r instanceof Error);
  // A type the target lacks is an answer; any other failure leaves the list incomplete, and an
  // incomplete list could make a correct fingerprint look wrong.
  if (failure) throw failure;
  const keys = results.filter((r): r is PublicKeyInfo => r !== null);
  if (keys.length === 0) throw new Error(`${target.host}:${target.port} offers no host key of a type the gateway supports (${keyTypes.join(', ')})`);
  return keys;
}

/** The target's key for these algorithms; null when it has none of them; an Error when the handshake failed. */
async function probeOne(dialer: Dialer, target: Target, algorithms: string[], timeoutMs: number): Promise<PublicKeyInfo | null | Error> {
  let sock: Awaited<ReturnType<Dialer['dial']>>;
  try {
    sock = await dialer.dial(target, timeoutMs);
  } catch (err) {
    return new Error(`cannot reach ${target.host}:${target.port}: ${(err as Error).message}`);
  }
  return new Promise((resolve) => {
    const client = new ssh2.Client();
    let seen: PublicKeyInfo | null = null;
    let done = false;
    const timer = setTimeout(() => finish(new Error(`no SSH host key from ${target.host}:${target.port} within ${timeoutMs} ms`)), timeoutMs);
    function finish(outcome: PublicKeyInfo | null | Error) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      client.end();
      sock.destroy();
      resolve(seen ?? outcome);
    }
    client.on('error', (err) => {
      if (/no matching host key format/i.test(err.message)) finish(null);
      else finish(new Error(`SSH handshake with ${target.host}:${target.port} failed: ${err.message}`));
    });
    client.on('close', () => finish(new Error(`${target.host}:${target.port} closed the connection before sending a host key`)));
    client.connect({
      sock, username: 'gatehouse-host-key-probe', readyTimeout: timeoutMs, algorithms: { serverHostKey: algorithms as ssh2.ServerHostKeyAlgorithm[] },
      hostVerifier: (key: Buffer) => {
        seen = publicKeyInfo(keyTypeOfBlob(key), key);
        setImmediate(() => finish(seen));
        return false; // stop here: nothing is authenticated during a probe
      },
    });
  });
}
