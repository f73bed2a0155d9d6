// Port forwarding through the gateway: local (-L, and -D, which arrives the same way) opens
// direct-tcpip channels; remote (-R) asks the target to listen. Both are refused unless the
// connection allows them; every request is recorded, allowed or not, an allowed one durably
// before anything is opened or listened on for it, and each forwarded connection's byte counts
// are recorded when it closes. Unix-socket forwarding (streamlocal: `-L` / `-R` with a path) is
// refused, and recorded as refused.
import type { Connection as SshConnection, ClientChannel, ServerChannel, TcpipRequestInfo } from 'ssh2';
import type ssh2 from 'ssh2';
import type { Logger } from 'pino';
import { RecordingUnavailableError, type SessionRecording } from '../../recorder/recorder.ts';

export interface ForwardingContext {
  client: SshConnection;
  target: ssh2.Client;
  rec: SessionRecording;
  log: Logger;
  allowed: Array<'local' | 'remote' | 'agent'>;
  track(done: Promise<void>): void;
}

const UNIX_SOCKETS_REFUSED = 'Unix socket forwarding is not supported by this gateway';

export class Forwarding {
  private readonly ctx: ForwardingContext;
  /** Remote listeners the client asked for, so incoming connections can be matched to them. */
  private readonly remoteBinds = new Set<string>();

  constructor(ctx: ForwardingContext) {
    this.ctx = ctx;
    ctx.target.on('tcp connection', (info, accept, reject) => {
      const key = `${info.destIP}:${info.destPort}`;
      if (![...this.remoteBinds].some((b) => b.endsWith(`:${info.destPort}`)) && !this.remoteBinds.has(key)) return reject();
      const from = `${info.srcIP}:${info.srcPort}`;
      // A connection to a remote forward reaches the client only once it is on record.
      void this.durably('ssh.forward.opened', { kind: 'remote', bind: key, from }).then((recorded) => {
        if (!recorded) return reject();
        ctx.client.forwardOut(info.destIP, info.destPort, info.srcIP, info.srcPort, (err, toClient) => {
          if (err) {
            ctx.rec.append('ssh.forward.failed', { kind: 'remote', bind: key, from, message: err.message });
            return reject();
          }
          this.splice('remote', toClient, accept(), { bind: key, from });
        });
      });
    });
  }

  /** A direct-tcpip channel (ssh -L / -D): connect to dest from the target's side. */
  direct(accept: () => ServerChannel, reject: () => void, req: TcpipRequestInfo): void {
    const dest = `${req.destIP}:${req.destPort}`;
    if (!this.ctx.allowed.includes('local')) {
      this.ctx.rec.append('ssh.forward', { kind: 'local', dest, allowed: false, reason: 'not allowed on this connection' });
      return reject();
    }
    void this.durably('ssh.forward', { kind: 'local', dest, allowed: true }).then((recorded) => {
      if (!recorded) return reject();
      this.ctx.target.forwardOut(req.srcIP, req.srcPort, req.destIP, req.destPort, (err, upstream) => {
        if (err) {
          this.ctx.rec.append('ssh.forward.failed', { kind: 'local', dest, message: err.message });
          return reject();
        }
        this.splice('local', accept(), upstream, { dest });
      });
    });
  }

  /** A direct-streamlocal channel (ssh -L to a Unix socket on the target): refused, on record. */
  directStreamLocal(reject: () => void, info: { socketPath: string }): void {
    this.ctx.rec.append('ssh.forward', { kind: 'local-socket', dest: info.socketPath, allowed: false, reason: UNIX_SOCKETS_REFUSED });
    reject();
  }

  /**
   * Records an allowed opening before forward (as the session's recording mode says); false when
   * the store cannot record it: the opening is then refused, and says why once the store is back.
   */
  private async durably(type: string, data: Record<string, unknown>): Promise<boolean> {
    try {
      await this.ctx.rec.beforeForward(type, data);
      return true;
    } catch (err) {
      const message = err instanceof RecordingUnavailableError ? 'the gateway cannot record right now; not opened' : (err as Error).message;
      this.ctx.rec.append('ssh.forward.failed', { kind: data.kind, ...('dest' in data ? { dest: data.dest } : { bind: data.bind }), message });
      return false;
    }
  }

  /** Global requests: tcpip-forward (ssh -R) and its cancellation; anything else is refused. */
  globalRequest(accept: ((port?: number) => void) | undefined, reject: (() => void) | undefined, name: string, info: { bindAddr: string; bindPort: number }): void {
    if (name === 'streamlocal-forward@openssh.com') {
      const path = (info as unknown as { socketPath?: string }).socketPath ?? '';
      this.ctx.rec.append('ssh.forward', { kind: 'remote-socket', bind: path, allowed: false, reason: UNIX_SOCKETS_REFUSED });
      return reject?.();
    }
    if (name !== 'tcpip-forward' && name !== 'cancel-tcpip-forward') return reject?.();
    const bind = `${info.bindAddr}:${info.bindPort}`;
    if (name === 'cancel-tcpip-forward') {
      this.remoteBinds.delete(bind);
      this.ctx.target.unforwardIn(info.bindAddr, info.bindPort, () => accept?.());
      return;
    }
    if (!this.ctx.allowed.includes('remote')) {
      this.ctx.rec.append('ssh.forward', { kind: 'remote', bind, allowed: false, reason: 'not allowed on this connection' });
      return reject?.();
    }
    // The target listens only once the request is on record (with the port asked for; a port the
    // target chose for port 0 follows in ssh.forward.listening).
    void this.durably('ssh.forward', { kind: 'remote', bind, allowed: true }).then((recorded) => {
      if (!recorded) return reject?.();
      this.ctx.target.forwardIn(info.bindAddr, info.bindPort, (err, port) => {
        if (err) {
          this.ctx.rec.append('ssh.forward.failed', { kind: 'remote', bind, message: err.message });
          return reject?.();
        }
        this.remoteBinds.add(`${info.bindAddr}:${port}`);
        if (port !== info.bindPort) this.ctx.rec.append('ssh.forward.listening', { kind: 'remote', bind: `${info.bindAddr}:${port}` });
        accept?.(port);
      });
    });
  }

  private splice(kind: 'local' | 'remote', a: ServerChannel | ClientChannel, b: ServerChannel | ClientChannel, where: Record<string, string>): void {
    let toTarget = 0;
    let toClient = 0;
    // a is the client side, b the target side, whichever opened the channel.
    a.on('data', (c: Buffer) => { toTarget += c.length; });
    b.on('data', (c: Buffer) => { toClient += c.length; });
    a.pipe(b);
    b.pipe(a);
    this.ctx.track(new Promise<void>((resolve) => {
      let closed = 0;
      const done = () => {
        if (++closed < 2) return;
        this.ctx.rec.append('ssh.forward.closed', { kind, ...where, bytesToTarget: toTarget, bytesToClient: toClient });
        resolve();
      };
      a.once('close', () => { b.destroy(); done(); });
      b.once('close', () => { a.destroy(); done(); });
    }));
  }
}
