// The gateway's own SSH login to a target: through the dialer (direct or a connector's tunnel),
// with the connection's stored credential, accepting only a host key pinned at registration and
// offering only the host-key algorithms of the pinned keys' types, so the target presents one of
// them rather than another key it prefers.
import ssh2 from 'ssh2';
import type { Dialer } from '../../connector/dialer.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { Connection } from '../../store/types.ts';
import { fingerprintOf, type PublicKeyInfo } from './keys.ts';
import { hostKeyAlgorithms, pinnedKeys } from './host-key-pins.ts';

export type UpstreamClient = ssh2.Client;

/** A refusal whose message is safe to show the client (it names no credential). */
export class UpstreamRefusal extends Error {}

/** `agent`: relays the target's agent requests to the client (only when the connection allows agent forwarding). */
export async function connectUpstream(conn: Connection, dialer: Dialer, secrets: SecretBox, timeoutMs: number, agent?: ssh2.BaseAgent): Promise<ssh2.Client> {
  let pinned: PublicKeyInfo[];
  try {
    pinned = conn.options.hostKey ? pinnedKeys(conn.options.hostKey) : [];
  } catch (err) {
    throw new UpstreamRefusal(`connection "${conn.name}" has an unusable pinned host key: ${(err as Error).message}`);
  }
  if (pinned.length === 0) throw new UpstreamRefusal(`connection "${conn.name}" has no pinned host key`);
  const pinnedFingerprints = pinned.map((k) => k.fingerprint).join(', ');
  let sock;
  try {
    sock = await dialer.dial({ host: conn.host, port: conn.port, via: conn.options.via }, timeoutMs);
  } catch (err) {
    throw new UpstreamRefusal(`cannot reach the target of connection "${conn.name}": ${(err as Error).message}`);
  }
  const secret = conn.sealedSecret ? secrets.open(conn.sealedSecret, conn.id) : undefined;
  const client = new ssh2.Client();
  let offered: string | null = null;
  return new Promise((resolve, reject) => {
    const fail = (err: Error) => {
      client.removeAllListeners('ready');
      client.end();
      sock.destroy();
      if (offered && !pinned.some((k) => k.fingerprint === offered)) {
        reject(new UpstreamRefusal(`the host key of the target of connection "${conn.name}" has changed (pinned ${pinnedFingerprints}, offered ${offered}); refusing to connect`));
      } else if (offered === null && /no matching host key/i.test(err.message)) {
        reject(new UpstreamRefusal(`the target of connection "${conn.name}" has no host key of the pinned types (${[...new Set(pinned.map((k) => k.type))].join(', ')}); refusing to connect`));
      } else if (/authentication methods failed/i.test(err.message)) {
        reject(new UpstreamRefusal(`the target of connection "${conn.name}" did not accept the gateway's credential`));
      } else {
        reject(new UpstreamRefusal(`SSH login to the target of connection "${conn.name}" failed: ${err.message}`));
      }
    };
    client.once('error', fail);
    client.once('ready', () => {
      client.off('error', fail);
      // Later errors surface on the channels and as 'close'; keep the process alive.
      client.on('error', () => {});
      resolve(client);
    });
    client.connect({
      sock, username: conn.username, readyTimeout: timeoutMs, keepaliveInterval: 15_000, keepaliveCountMax: 4, ...(agent ? { agent } : {}),
      ...(conn.options.sshAuth === 'password' ? { password: secret, tryKeyboard: true } : { privateKey: secret }),
      algorithms: { serverHostKey: hostKeyAlgorithms(pinned.map((k) => k.type)) as ssh2.ServerHostKeyAlgorithm[] },
      hostVerifier: (key: Buffer) => {
        offered = fingerprintOf(key);
        return pinned.some((k) => key.equals(k.blob));
      },
    });
    if (conn.options.sshAuth === 'password') {
      client.on('keyboard-interactive', (_name, _instructions, _lang, prompts, finish) => finish(prompts.map(() => secret ?? '')));
    }
  });
}
