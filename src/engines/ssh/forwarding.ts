// Port forwarding through the gateway: local (-L, and -D, which arrives the same way) opens
// direct-tcpip channels; remote (-R) asks the target to listen. Both are refused unless the
// connection allows them; every request is recorded, allowed or not, and each forwarded
// connection's byte counts are recorded when it closes.
import type { Connection as SshConnection, ClientChannel, ServerChannel, TcpipRequestInfo } from 'ssh2';
import type ssh2 from 'ssh2';
import type { Logger } from 'pino';
import type { SessionRecording } from '../../recorder/recorder.ts';

export interface ForwardingContext {
  client: SshConnection;
  target: ssh2.Client;
  rec: SessionRecording;
  log: Logger;
  allowed: Array<'local' | 'remote' | 'agent'>;
  track(done: Promise<void>): void;
}

export class Forwarding {
  private readonly ctx: ForwardingContext;
  /** Remote listeners the client asked for, so incoming connections can be matched to them. */
  private readonly remoteBinds = new Set<string>();

  constructor(ctx: ForwardingContext) {
    this.ctx = ctx;
    ctx.target.on('tcp connection', (info, accept, reject) => {
      const key = `${info.destIP}:${info.destPort}`;
      if (![...this.remoteBinds].some((b) => b.endsWith(`:${info.destPort}`)) && !this.remoteBinds.has(key)) return reject();
      ctx.client.forwardOut(info.destIP, info.destPort, info.srcIP, info.srcPort, (err, toClient) => {
        if (err) return reject();
        this.splice('remote', toClient, accept(), { bind: key, from: `${info.srcIP}:${info.srcPort}` });
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
    this.ctx.rec.append('ssh.forward', { kind: 'local', dest, allowed: true });
    this.ctx.target.forwardOut(req.srcIP, req.srcPort, req.destIP, req.destPort, (err, upstream) => {
      if (err) {
        this.ctx.rec.append('ssh.forward.failed', { kind: 'local', dest, message: err.message });
        return reject();
      }
      this.splice('local', accept(), upstream, { dest });
    });
  }

  /** Global requests: tcpip-forward (ssh -R) and its cancellation; anything else is refused. */
  globalRequest(accept: ((port?: number) => void) | undefined, reject: (() => void) | undefined, name: string, info: { bindAddr: string; bindPort: number }): void {
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
    this.ctx.target.forwardIn(info.bindAddr, info.bindPort, (err, port) => {
      if (err) {
        this.ctx.rec.append('ssh.forward.failed', { kind: 'remote', bind, message: err.message });
        return reject?.();
      }
      this.remoteBinds.add(`${info.bindAddr}:${port}`);
      this.ctx.rec.append('ssh.forward', { kind: 'remote', bind: `${info.bindAddr}:${port}`, allowed: true });
      accept?.(port);
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
