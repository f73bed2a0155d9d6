// Requests to a connection's Git HTTP server: the target URL is built from the connection (never
// from the client), and the stored basic-auth credential is added here and nowhere else.
import http from 'node:http';
import tls from 'node:tls';
import { pipeline, type Duplex, type Readable } from 'node:stream';
import type { Dialer } from '../../connector/dialer.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { Connection } from '../../store/types.ts';
import { AdvertisementReader } from '../git/refs.ts';
import { buildUploadPackProbe, probeOptionsFor, UploadPackResponseReader } from '../git/upload-pack.ts';
import { inspectPack } from '../git/pack-stream.ts';

export interface TargetRequest {
  method: 'GET' | 'POST';
  /** Repository path and endpoint below the connection's base path, e.g. "/app.git/info/refs". */
  path: string;
  query?: string;
  headers?: Record<string, string>;
  body?: Readable | Buffer;
}

export class GitTarget {
  private readonly conn: Connection;
  private readonly auth: string | null;

  private readonly dialer: Dialer;
  /** Aborts every request to the target (the session was ended: revoked, expired, killed). */
  private readonly signal: AbortSignal | undefined;

  constructor(conn: Connection, secrets: SecretBox, dialer: Dialer, signal?: AbortSignal) {
    this.conn = conn;
    this.dialer = dialer;
    this.signal = signal;
    const password = conn.sealedSecret ? secrets.open(conn.sealedSecret, conn.id) : null;
    this.auth = conn.username ? 'Basic ' + Buffer.from(`${conn.username}:${password ?? ''}`).toString('base64') : null;
  }

  /** Where a repository path lands on the target (for records; carries no credential). */
  url(path: string): string {
    return `${this.conn.options.tls ? 'https' : 'http'}://${this.conn.host}:${this.conn.port}${this.conn.options.basePath ?? ''}${path}`;
  }

  /** One request on its own connection, dialed like every target (directly or through a connector). */
  async request(req: TargetRequest, timeoutMs = 30_000): Promise<http.IncomingMessage> {
    const raw = await this.dialer.dial({ host: this.conn.host, port: this.conn.port, via: this.conn.options.via }, timeoutMs);
    // TLS is verified against the system CAs and the connection's host name.
    const sock: Duplex = this.conn.options.tls ? tls.connect({ socket: raw, servername: this.conn.host, ALPNProtocols: ['http/1.1'] }) : raw;
    return new Promise((resolve, reject) => {
      const r = http.request({
        createConnection: () => sock as import('node:net').Socket, agent: false,
        host: this.conn.host, port: this.conn.port, method: req.method,
        // The repository path arrives decoded (and checked for ".." in that form): encode it again,
        // so that the target decodes exactly that and no "%2e%2e", "?" or "#" changes its meaning.
        path: `${this.conn.options.basePath ?? ''}${encodePath(req.path)}${req.query ? `?${req.query}` : ''}`,
        headers: { 'user-agent': 'gatehouse', ...(this.auth ? { authorization: this.auth } : {}), ...req.headers },
        timeout: timeoutMs, signal: this.signal,
      }, resolve);
      r.on('timeout', () => r.destroy(new Error(`the target did not answer within ${timeoutMs} ms`)));
      r.on('error', reject);
      if (!req.body) r.end();
      else if (Buffer.isBuffer(req.body)) r.end(req.body);
      // A body that fails (the client went away, an inflated body over the limit) aborts the request.
      else pipeline(req.body, r, () => {});
    });
  }

  /**
   * The upload-pack probe over smart HTTP (two requests: the advertisement, then the question):
   * commits reachable from `tips` and not from `have`, or null when the target would not say.
   */
  async probe(repoPath: string, tips: string[], have: string): Promise<Map<string, string[]> | null> {
    try {
      const adRes = await this.request({ method: 'GET', path: `${repoPath}/info/refs`, query: 'service=git-upload-pack', headers: { 'git-protocol': 'version=2' } });
      if (adRes.statusCode !== 200) { adRes.resume(); return null; }
      const ad = new AdvertisementReader();
      for await (const c of adRes) ad.push(c as Buffer);
      if (!ad.result) return null;
      const options = probeOptionsFor(ad.result);
      const res = await this.request({
        method: 'POST', path: `${repoPath}/git-upload-pack`, body: buildUploadPackProbe(tips, have, ad.result.objectFormat, options),
        headers: { 'content-type': 'application/x-git-upload-pack-request', accept: 'application/x-git-upload-pack-result', ...(options.protocol === 2 ? { 'git-protocol': 'version=2' } : {}) },
      });
      if (res.statusCode !== 200) { res.resume(); return null; }
      const reply = new UploadPackResponseReader({ protocol: options.protocol });
      for await (const c of res) {
        reply.push(c as Buffer);
        if (reply.done) break;
      }
      return reply.done ? (await inspectPack(reply.pack!, ad.result.objectFormat)).commits : null;
    } catch {
      return null;
    }
  }
}

/** Percent-encodes each segment of a decoded path ("/a b/%2e" → "/a%20b/%252e"). */
function encodePath(path: string): string {
  return path.split('/').map((segment) => encodeURIComponent(segment)).join('/');
}
