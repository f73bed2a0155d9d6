// Fetches a target's SSH host key once, so an operator can confirm it before it is pinned.
import ssh2 from 'ssh2';
import type { Dialer, Target } from '../../connector/dialer.ts';
import { publicKeyInfo, type PublicKeyInfo } from './keys.ts';
import { keyTypeOfBlob } from './wire.ts';

export async function probeHostKey(dialer: Dialer, target: Target, timeoutMs = 10_000): Promise<PublicKeyInfo> {
  const sock = await dialer.dial(target, timeoutMs);
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let seen: PublicKeyInfo | null = null;
    const timer = setTimeout(() => finish(new Error(`no SSH host key from ${target.host}:${target.port} within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err: Error | null) => {
      clearTimeout(timer);
      client.end();
      sock.destroy();
      if (seen) resolve(seen);
      else reject(err ?? new Error('the target sent no host key'));
    };
    client.on('error', (err) => finish(seen ? null : new Error(`SSH handshake with ${target.host}:${target.port} failed: ${err.message}`)));
    client.connect({
      sock, username: 'gatehouse-host-key-probe', readyTimeout: timeoutMs,
      hostVerifier: (key: Buffer) => {
        seen = publicKeyInfo(keyTypeOfBlob(key), key);
        setImmediate(() => finish(null));
        return false; // stop here: nothing is authenticated during a probe
      },
    });
  });
}
