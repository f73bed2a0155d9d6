// Gateway side of connector tunnels: the TLS listener connectors dial, the registry of live
// tunnels, and opening a stream to a target through one of them.
import http2 from 'node:http2';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Store } from '../store/types.ts';
import type { ListenAddress } from '../util/address.ts';
import { connectorNameToCn, type ConnectorCa, type PemPair } from './ca.ts';
import { DIAL_PATH, HELLO_PATH, TARGET_HEADER, TUNNEL_ALPN, type Hello } from './tunnel-protocol.ts';

export interface TunnelInfo {
  name: string;
  version: string;
  remoteAddr: string;
  connectedAt: number;
  lastSeen: number;
  openStreams: number;
  allow: string[];
}

interface Tunnel extends TunnelInfo { session: http2.ClientHttp2Session; socket: tls.TLSSocket }

const PING_INTERVAL_MS = 10_000;

/** Why a tunnel stream ended early, for the session's end reason. */
const lostStreams = new WeakMap<Duplex, string>();
export function tunnelLossReason(stream: Duplex): string | undefined {
  return lostStreams.get(stream);
}

/** A failure of the connector path (none connected, refused target, no answer): safe to tell the client. */
export class ConnectorError extends Error {}

export class TunnelServer {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly tls: PemPair;
  private readonly ca: ConnectorCa;
  private readonly tunnels = new Set<Tunnel>();
  private server: tls.Server | null = null;

  constructor(deps: { store: Store; log: Logger; ca: ConnectorCa; tls: PemPair }) {
    this.store = deps.store;
    this.log = deps.log.child({ component: 'tunnels' });
    this.ca = deps.ca;
    this.tls = deps.tls;
  }

  listen(address: ListenAddress): Promise<ListenAddress> {
    const server = tls.createServer({
      cert: this.tls.cert, key: this.tls.key, ca: this.ca.certPem, requestCert: true, rejectUnauthorized: true,
      ALPNProtocols: [TUNNEL_ALPN], minVersion: 'TLSv1.3',
    }, (socket) => { void this.accept(socket); });
    server.on('tlsClientError', (err) => this.log.info({ err: err.message }, 'connector TLS handshake refused'));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(address.port, address.host, () => {
        server.off('error', reject);
        const a = server.address() as { address: string; port: number };
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  private async accept(socket: tls.TLSSocket): Promise<void> {
    socket.on('error', () => {});
    socket.setNoDelay(true); // many small frames (one per protocol message): no Nagle delays
    const peer = socket.getPeerCertificate();
    const cn = typeof peer.subject?.CN === 'string' ? peer.subject.CN : '';
    const name = cn.startsWith('connector:') ? cn.slice('connector:'.length) : '';
    const record = name ? await this.store.getConnectorByName(name) : undefined;
    const serial = (peer.serialNumber ?? '').toLowerCase().replace(/^0+/, '');
    if (!record || record.revokedAt !== null || (record.certSerial ?? '').toLowerCase().replace(/^0+/, '') !== serial || cn !== connectorNameToCn(record.name)) {
      this.log.warn({ connector: name || cn, remote: socket.remoteAddress }, 'connector refused: unknown, revoked or superseded certificate');
      socket.destroy();
      return;
    }
    const session = http2.connect(`http://connector-${name}`, { createConnection: () => socket });
    session.on('error', () => {});
    let hello: Hello;
    try {
      hello = await this.hello(session);
    } catch (err) {
      this.log.warn({ connector: name, err: (err as Error).message }, 'connector did not introduce itself');
      session.destroy();
      return;
    }
    const now = Date.now();
    const tunnel: Tunnel = {
      name, version: hello.version, allow: hello.allow, remoteAddr: `${socket.remoteAddress}:${socket.remotePort}`,
      connectedAt: now, lastSeen: now, openStreams: 0, session, socket,
    };
    this.tunnels.add(tunnel);
    this.log.info({ connector: name, remote: tunnel.remoteAddr, version: hello.version }, 'connector connected');
    // A ping unanswered within an interval means the connector is gone (frozen, partitioned).
    const ping = setInterval(() => {
      if (session.destroyed || session.closed) return;
      const timer = setTimeout(() => session.destroy(), PING_INTERVAL_MS);
      timer.unref();
      try {
        session.ping((err) => { clearTimeout(timer); if (!err) tunnel.lastSeen = Date.now(); else session.destroy(); });
      } catch {
        clearTimeout(timer);
        session.destroy(); // too many unanswered pings, or the session is going away
      }
    }, PING_INTERVAL_MS);
    ping.unref();
    session.once('close', () => {
      clearInterval(ping);
      this.tunnels.delete(tunnel);
      this.log.warn({ connector: name }, 'connector disconnected');
    });
  }

  private hello(session: http2.ClientHttp2Session): Promise<Hello> {
    return new Promise((resolve, reject) => {
      const req = session.request({ ':method': 'GET', ':path': HELLO_PATH });
      const timer = setTimeout(() => { req.close(); reject(new Error('hello timed out')); }, 10_000);
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => { body += d; });
      req.on('end', () => {
        clearTimeout(timer);
        try { resolve(JSON.parse(body) as Hello); } catch { reject(new Error('malformed hello')); }
      });
      req.on('error', (err) => { clearTimeout(timer); reject(err); });
    });
  }

  /**
   * Opens a byte stream to `host:port` through a healthy tunnel of the named connectors, trying
   * the others in turn when one does not answer (it may be frozen before its ping says so).
   */
  async open(connectors: string[], target: { host: string; port: number }, timeoutMs: number): Promise<Duplex> {
    const healthy = [...this.tunnels].filter((t) => connectors.includes(t.name) && !t.session.closed && !t.session.destroyed);
    if (healthy.length === 0) throw new ConnectorError(`no connector of ${connectors.join(', ')} is connected`);
    // Freshest first, ties broken at random so load spreads.
    healthy.sort((a, b) => (b.lastSeen - a.lastSeen) || (Math.random() - 0.5));
    const deadline = Date.now() + timeoutMs;
    let lastError: Error = new ConnectorError('no connector answered');
    for (let i = 0; i < healthy.length; i++) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      const share = i < healthy.length - 1 ? Math.min(remaining, Math.max(1000, Math.floor(remaining / (healthy.length - i)))) : remaining;
      try {
        return await this.openVia(healthy[i], target, share);
      } catch (err) {
        lastError = err as Error;
        if (err instanceof ConnectorError && /refused/.test(err.message)) throw err; // a policy answer, not an outage
      }
    }
    throw lastError instanceof ConnectorError ? lastError : new ConnectorError(lastError.message);
  }

  private openVia(tunnel: Tunnel, target: { host: string; port: number }, timeoutMs: number): Promise<Duplex> {
    return new Promise((resolve, reject) => {
      const stream = tunnel.session.request({ ':method': 'POST', ':path': DIAL_PATH, [TARGET_HEADER]: `${target.host}:${target.port}` }, { endStream: false });
      const timer = setTimeout(() => { stream.close(http2.constants.NGHTTP2_CANCEL); reject(new ConnectorError(`connector ${tunnel.name} did not reach ${target.host}:${target.port} in time`)); }, timeoutMs);
      tunnel.openStreams++;
      stream.once('close', () => {
        tunnel.openStreams--;
        if (tunnel.session.destroyed || tunnel.session.closed) lostStreams.set(stream, `connector ${tunnel.name} disconnected`);
      });
      stream.once('response', (headers) => {
        clearTimeout(timer);
        const status = Number(headers[':status']);
        if (status === 200) {
          resolve(stream);
          return;
        }
        let body = '';
        stream.setEncoding('utf8');
        stream.on('data', (d: string) => { body += d; });
        stream.on('end', () => reject(new ConnectorError(`connector ${tunnel.name} refused ${target.host}:${target.port}: ${body || `status ${status}`}`)));
        if (status === 403) this.log.warn({ connector: tunnel.name, target: `${target.host}:${target.port}` }, 'connector refused a target outside its allow-list');
      });
      stream.once('error', (err) => { clearTimeout(timer); reject(err); });
    });
  }

  list(): TunnelInfo[] {
    return [...this.tunnels].map(({ session: _s, socket: _k, ...info }) => info);
  }

  /** Cuts every tunnel of a connector at once (revocation). */
  disconnect(name: string): void {
    for (const t of this.tunnels) if (t.name === name) t.session.destroy();
  }

  async close(): Promise<void> {
    for (const t of this.tunnels) t.session.destroy();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
