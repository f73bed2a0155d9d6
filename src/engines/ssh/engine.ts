// The SSH engine: an SSH server (ssh2) on the gateway's SSH listener. Clients connect as
// `<connection>@gateway`; each connection is an SshClientSession.
import net from 'node:net';
import { createRequire } from 'node:module';
import ssh2 from 'ssh2';
import type { Engine, EngineContext } from '../engine.ts';
import type { ListenAddress } from '../../util/address.ts';
import { loadOrCreateHostKey, type PublicKeyInfo } from './keys.ts';
import { SshClientSession, type SshSessionOptions } from './client-session.ts';

export interface SshEngineOptions extends Partial<SshSessionOptions> {
  /** Where the gateway's host key lives (generated on first start). */
  hostKeyDir: string;
  /** How long a connection may take to finish the handshake and sign in. */
  signInTimeoutMs?: number;
}

export class SshEngine implements Engine {
  readonly protocol = 'ssh';
  readonly hostKey: PublicKeyInfo;
  /** Whether ssh2 encrypts with its native binding (built by scripts/build-ssh-crypto.cjs). */
  readonly nativeCrypto: boolean;
  private readonly server: ssh2.Server;
  private readonly tcp: net.Server;
  /** Connections that have not signed in yet, by peer address, with the timer that drops them. */
  private readonly signingIn = new Map<string, { timer: NodeJS.Timeout; socket: net.Socket }>();
  private readonly sessions = new Set<SshClientSession>();

  constructor(ctx: EngineContext, options: SshEngineOptions) {
    const hostKey = loadOrCreateHostKey(options.hostKeyDir);
    this.hostKey = hostKey.publicKey;
    this.nativeCrypto = ssh2NativeCryptoInUse();
    if (this.nativeCrypto) ctx.log.info({ nativeCrypto: true }, 'ssh: ssh2 native crypto in use');
    else ctx.log.warn({ nativeCrypto: false }, 'ssh: ssh2 native crypto binding not loaded (run `npm rebuild` in the install); SSH encrypts in JavaScript at about half the throughput');
    const sessionOptions: SshSessionOptions = { upstreamTimeoutMs: options.upstreamTimeoutMs ?? 15_000, maxAuthAttempts: options.maxAuthAttempts ?? 6, gitPush: options.gitPush };
    this.server = new ssh2.Server({
      hostKeys: [hostKey.privateKey],
      ident: 'Gatehouse',
      // AES-GCM first: node:crypto does it in native code; chacha20 without ssh2's optional addon is slower.
      algorithms: { cipher: ['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes128-ctr', 'aes256-ctr'] },
    }, (client, info) => {
      const key = `${info.ip}:${info.port}`;
      client.once('ready', () => { clearTimeout(this.signingIn.get(key)?.timer); this.signingIn.delete(key); });
      const session = new SshClientSession(ctx, client, info, sessionOptions);
      this.sessions.add(session);
      void session.closed.finally(() => this.sessions.delete(session));
    });
    this.server.on('error', (err: Error) => ctx.log.error({ err: err.message }, 'ssh listener error'));
    const signInTimeoutMs = options.signInTimeoutMs ?? 30_000;
    this.tcp = net.createServer({ noDelay: true }, (socket) => {
      const key = `${socket.remoteAddress}:${socket.remotePort}`;
      const timer = setTimeout(() => socket.destroy(), signInTimeoutMs);
      this.signingIn.set(key, { timer, socket });
      socket.once('close', () => { clearTimeout(timer); this.signingIn.delete(key); });
      this.server.injectSocket(socket);
    });
  }

  listen(address: ListenAddress): Promise<ListenAddress> {
    return new Promise((resolve, reject) => {
      this.tcp.once('error', reject);
      this.tcp.listen(address.port, address.host, () => {
        this.tcp.off('error', reject);
        const bound = this.tcp.address() as { port: number };
        resolve({ host: address.host, port: bound.port });
      });
    });
  }

  async close(): Promise<void> {
    // net.Server.close() calls back only once every connection has ended: the sessions are ended
    // first (a held action is withdrawn with them), not after — otherwise an open session, or one
    // waiting for approval, kept the gateway from stopping until it left by itself.
    const closed = new Promise<void>((resolve) => this.tcp.close(() => resolve()));
    for (const { timer, socket } of this.signingIn.values()) {
      clearTimeout(timer);
      socket.destroy();
    }
    for (const s of this.sessions) s.shutdown('gateway shutdown');
    await Promise.allSettled([...this.sessions].map((s) => s.closed));
    await closed;
  }
}

/** ssh2 loads its binding once, silently falling back to JavaScript crypto: ask it which it got. */
function ssh2NativeCryptoInUse(): boolean {
  const crypto = createRequire(import.meta.url)('ssh2/lib/protocol/crypto.js') as { bindingAvailable?: boolean };
  return crypto.bindingAvailable === true;
}
