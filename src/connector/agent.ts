// The connector: runs next to private resources, dials out to the gateway (no inbound port),
// keeps one authenticated tunnel, and opens TCP connections to allow-listed targets only.
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { createKeyAndCsr } from './ca.ts';
import { CONNECTOR_VERSION, DIAL_PATH, HELLO_PATH, TARGET_HEADER, TUNNEL_ALPN, parseHostPort, type Hello } from './tunnel-protocol.ts';
import { connectThroughProxy } from './http-proxy.ts';
import { checkGatewayUrl, gatewayRequest, GatewayTrustError, type GatewayTrust } from '../tls/gateway-client.ts';

export interface AgentOptions {
  gateway: string;
  name: string;
  dataDir: string;
  allow: string[];
  token?: string;
  /**
   * How enrollment checks the gateway's API: a pinned certificate fingerprint, a CA file, or the
   * system's CAs; plain http only to loopback unless insecureHttp. The tunnel is then checked
   * against the CA named in that (authenticated) answer only.
   */
  trust?: GatewayTrust;
  log: Logger;
}

/** What the connector keeps in its data directory after enrollment (0600). */
interface Credentials {
  name: string;
  gateway: string;
  tunnel: { host: string; port: number };
  certPem: string;
  keyPem: string;
  caPem: string;
}

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;
const KEEPALIVE_MS = 15_000;

export class ConnectorAgent {
  private readonly opts: AgentOptions;
  private readonly log: Logger;
  private readonly allow: Set<string>;
  private creds: Credentials | null = null;
  private session: http2.ServerHttp2Session | null = null;
  /** The gateway accepted this connector on the current tunnel (it asked for our hello). */
  private accepted = false;
  private stopped = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly targets = new Set<net.Socket>();
  /** Resolves each time a tunnel is up (for tests and the CLI's first message). */
  onConnected: (() => void) | null = null;

  constructor(opts: AgentOptions) {
    this.opts = opts;
    this.log = opts.log.child({ connector: opts.name });
    this.allow = new Set(opts.allow.map((a) => {
      const t = parseHostPort(a);
      if (!t) throw new Error(`invalid --allow entry "${a}" (expected HOST:PORT)`);
      return `${t.host}:${t.port}`;
    }));
  }

  private get credentialFile(): string { return path.join(this.opts.dataDir, 'connector.json'); }

  async start(): Promise<void> {
    this.creds = existsSync(this.credentialFile) ? JSON.parse(readFileSync(this.credentialFile, 'utf8')) as Credentials : null;
    if (this.creds && this.creds.name !== this.opts.name) throw new Error(`${this.credentialFile} belongs to connector "${this.creds.name}", not "${this.opts.name}"`);
    if (!this.creds) {
      if (!this.opts.token) throw new Error('this connector is not enrolled yet: pass --token (from `gatehouse connector add NAME`)');
      // Before a key is made or a byte sent: the token must not go where it cannot be protected.
      try {
        checkGatewayUrl(this.opts.gateway, this.opts.trust ?? {});
      } catch (err) {
        throw new Error(`cannot enroll: ${(err as Error).message}`);
      }
      this.creds = await this.enroll(this.opts.token);
    }
    this.connect();
  }

  /** Exchanges the single-use enrollment token for a client certificate; the key stays here. */
  private async enroll(token: string): Promise<Credentials> {
    const { keyPem, csrPem } = await createKeyAndCsr(this.opts.name);
    let res: { status: number; text: string };
    try {
      res = await gatewayRequest(this.opts.gateway, '/api/v1/connectors/enroll', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: this.opts.name, token, csr: csrPem }), timeoutMs: 30_000,
      }, this.opts.trust ?? {});
    } catch (err) {
      if (err instanceof GatewayTrustError) throw new Error(`cannot enroll: ${err.message}`);
      throw new Error(`cannot reach the gateway at ${this.opts.gateway}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    let body: { error?: string; certificate?: string; caCertificate?: string; tunnel?: { host: string; port: number } } = {};
    try { body = JSON.parse(res.text) as typeof body; } catch { /* not JSON: reported by status */ }
    if (res.status !== 200 || !body.certificate || !body.caCertificate || !body.tunnel) throw new Error(`enrollment refused: ${body.error ?? `HTTP ${res.status}`}`);
    const creds: Credentials = { name: this.opts.name, gateway: this.opts.gateway, tunnel: body.tunnel, certPem: body.certificate, keyPem, caPem: body.caCertificate };
    mkdirSync(this.opts.dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(this.credentialFile, JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
    chmodSync(this.credentialFile, 0o600);
    this.log.info({ tunnel: `${creds.tunnel.host}:${creds.tunnel.port}` }, 'enrolled');
    return creds;
  }

  private connect(): void {
    if (this.stopped || !this.creds) return;
    const creds = this.creds;
    const onSocket = (raw: net.Socket | undefined): void => {
      const socket = tls.connect({
        socket: raw, host: creds.tunnel.host, port: creds.tunnel.port, cert: creds.certPem, key: creds.keyPem, ca: creds.caPem,
        ALPNProtocols: [TUNNEL_ALPN], minVersion: 'TLSv1.3',
        // The pinned CA is the gateway's identity: it signs nothing but tunnel certificates.
        checkServerIdentity: () => undefined,
      });
      socket.once('secureConnect', () => { socket.setNoDelay(true); this.serve(socket); });
      socket.once('error', (err) => { this.log.warn({ err: err.message }, 'tunnel connection failed'); this.retry(); });
    };
    const proxy = process.env.HTTPS_PROXY ?? process.env.https_proxy;
    if (proxy) {
      connectThroughProxy(proxy, creds.tunnel.host, creds.tunnel.port).then(onSocket, (err: Error) => {
        this.log.warn({ err: err.message }, 'proxy connection failed');
        this.retry();
      });
    } else {
      onSocket(undefined);
    }
  }

  private serve(socket: tls.TLSSocket): void {
    const server = http2.createServer();
    server.on('session', (session) => {
      this.session = session;
      this.accepted = false;
      session.on('error', () => {});
      // Our own keepalive: a gateway that vanished without a FIN is noticed within ~2 intervals.
      const keepalive = setInterval(() => {
        if (session.destroyed || session.closed) return;
        const timer = setTimeout(() => session.destroy(), KEEPALIVE_MS);
        try {
          session.ping((err) => { clearTimeout(timer); if (err) session.destroy(); });
        } catch {
          clearTimeout(timer);
          session.destroy();
        }
      }, KEEPALIVE_MS);
      keepalive.unref();
      session.once('close', () => {
        clearInterval(keepalive);
        this.session = null;
        if (this.accepted) this.log.warn('tunnel down');
        else this.log.error('the gateway refused this connector (revoked, re-enrolled elsewhere, or its certificate is unknown); retrying with backoff');
        this.retry();
      });
    });
    server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => this.onStream(stream, headers));
    server.emit('connection', socket);
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => {});
    if (headers[':path'] === HELLO_PATH) {
      // The gateway asks for our hello only after it has accepted our certificate: now we are up.
      if (!this.accepted) {
        this.accepted = true;
        this.attempt = 0;
        this.log.info('tunnel up');
        this.onConnected?.();
      }
      const hello: Hello = { name: this.opts.name, version: CONNECTOR_VERSION, allow: [...this.allow] };
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify(hello));
      return;
    }
    if (headers[':path'] !== DIAL_PATH) {
      stream.respond({ ':status': 404 });
      stream.end();
      return;
    }
    const target = parseHostPort(String(headers[TARGET_HEADER] ?? ''));
    const key = target ? `${target.host}:${target.port}` : '';
    if (!target || !this.allow.has(key)) {
      // A compromised gateway must not turn the connector into a general pivot.
      this.log.warn({ target: headers[TARGET_HEADER] }, 'refused a target outside the allow-list');
      stream.respond({ ':status': 403 });
      stream.end(`target ${String(headers[TARGET_HEADER] ?? '?')} is not on this connector's allow-list`);
      return;
    }
    const socket = net.connect({ host: target.host, port: target.port, noDelay: true });
    this.targets.add(socket);
    let responded = false;
    socket.once('connect', () => {
      responded = true;
      stream.respond({ ':status': 200 });
      socket.pipe(stream);
      stream.pipe(socket);
    });
    socket.on('error', (err) => {
      if (!responded) {
        responded = true;
        stream.respond({ ':status': 502 });
        stream.end(`cannot reach ${key}: ${err.message}`);
      } else {
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }
    });
    socket.once('close', () => { this.targets.delete(socket); if (!stream.destroyed) stream.end(); });
    stream.once('close', () => socket.destroy());
  }

  /** Reconnects with exponential backoff and full jitter. */
  private retry(): void {
    if (this.stopped || this.retryTimer) return;
    const ceiling = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** this.attempt++);
    const delay = Math.round(Math.random() * ceiling) + 100;
    this.retryTimer = setTimeout(() => { this.retryTimer = null; this.connect(); }, delay);
  }

  get connected(): boolean { return this.accepted && this.session !== null && !this.session.closed; }

  /** Clean shutdown: the gateway sees GOAWAY, target connections close. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const s of this.targets) s.destroy();
    const session = this.session;
    if (session) await new Promise<void>((resolve) => { session.close(() => resolve()); setTimeout(resolve, 2000).unref(); });
  }
}
