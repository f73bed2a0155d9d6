// The gateway's own SSH login to a target: through the dialer (direct or a connector's tunnel),
// with the connection's stored credential, accepting only the host key pinned at registration.
import ssh2 from 'ssh2';
import type { Dialer } from '../../connector/dialer.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { Connection } from '../../store/types.ts';
import { fingerprintOf, parsePublicKeyLine } from './keys.ts';

export type UpstreamClient = ssh2.Client;

/** A refusal whose message is safe to show the client (it names no credential). */
export class UpstreamRefusal extends Error {}

/** `agent`: relays the target's agent requests to the client (only when the connection allows agent forwarding). */
export async function connectUpstream(conn: Connection, dialer: Dialer, secrets: SecretBox, timeoutMs: number, agent?: ssh2.BaseAgent): Promise<ssh2.Client> {
  const pinned = conn.options.hostKey ? parsePublicKeyLine(conn.options.hostKey) : null;
  if (!pinned) throw new UpstreamRefusal(`connection "${conn.name}" has no pinned host key`);
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
      if (offered && offered !== pinned.fingerprint) {
        reject(new UpstreamRefusal(`the host key of the target of connection "${conn.name}" has changed (pinned ${pinned.fingerprint}, offered ${offered}); refusing to connect`));
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
      hostVerifier: (key: Buffer) => {
        offered = fingerprintOf(key);
        return key.equals(pinned.blob);
      },
    });
    if (conn.options.sshAuth === 'password') {
      client.on('keyboard-interactive', (_name, _instructions, _lang, prompts, finish) => finish(prompts.map(() => secret ?? '')));
    }
  });
}
