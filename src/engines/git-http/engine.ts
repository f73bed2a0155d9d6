// Git over smart HTTP: `http(s)://<gateway>/git/<connection>/<repo path>`, served on the API's
// HTTP listener. Clients sign in with a gatehouse token as the basic-auth password. Each request
// (advertisement, fetch, push) is one recorded session; pushes get the same protected-ref
// guard as over SSH (src/engines/git/push-guard.ts), and a refused push never reaches the target.
import { PassThrough, type Readable } from 'node:stream';
import zlib from 'node:zlib';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Engine, EngineContext } from '../engine.ts';
import type { Connection, Identity } from '../../store/types.ts';
import type { SessionRecording } from '../../recorder/recorder.ts';
import { INVALID_TOKEN, isRefusal, type Attempt, type OpenSession } from '../../access/admission.ts';
import { PushRequestReader, ReportStatusReader } from '../git/receive-pack.ts';
import { UploadPackRequestReader } from '../git/upload-pack.ts';
import { capabilityValue, type ObjectFormat } from '../git/refs.ts';
import { decideUpdates, forwardedPushResult, needsPackBeforeForward, PackCopy, refusalReport, refusedPushResult, MAX_GUARDED_PACK_BYTES, type RecordedUpdate } from '../git/push-guard.ts';
import { GitTarget } from './target-client.ts';

type Service = 'git-upload-pack' | 'git-receive-pack';
const REALM = 'Basic realm="Gatehouse", charset="UTF-8"';
/** Response headers of the target that are passed on to the git client. */
const PASSED_HEADERS = ['content-type', 'cache-control', 'expires', 'pragma'];

interface Admitted { identity: Identity; conn: Connection; rec: SessionRecording; open: OpenSession; target: GitTarget; repoPath: string; killed: string | null; abort: AbortController }

export class GitHttpEngine implements Engine {
  readonly protocol = 'git-http';
  private readonly ctx: EngineContext;

  constructor(ctx: EngineContext) {
    this.ctx = ctx;
  }

  async close(): Promise<void> {}

  /** Mounted on the API server (see src/api/server.ts). */
  routes = async (app: FastifyInstance): Promise<void> => {
    // Bodies stay streams: packs can be large and are relayed, not parsed by fastify.
    app.addContentTypeParser(['application/x-git-upload-pack-request', 'application/x-git-receive-pack-request'], (_req, payload, done) => done(null, payload));
    const handler = (req: FastifyRequest, reply: FastifyReply) => this.handle(req, reply);
    app.get('/git/*', handler);
    app.post('/git/*', { bodyLimit: Number.MAX_SAFE_INTEGER }, handler);
  };

  private async handle(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const rest = (req.params as { '*': string })['*'] ?? '';
    const slash = rest.indexOf('/');
    const connectionName = slash < 0 ? rest : rest.slice(0, slash);
    const path = slash < 0 ? '' : rest.slice(slash);
    const query = new URLSearchParams(req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '');
    let service: Service | null = null;
    let endpoint: 'advertise' | 'rpc' | null = null;
    let repoPath = '';
    if (req.method === 'GET' && path.endsWith('/info/refs')) {
      const s = query.get('service');
      if (s === 'git-upload-pack' || s === 'git-receive-pack') service = s;
      endpoint = 'advertise';
      repoPath = path.slice(0, -'/info/refs'.length);
    } else if (req.method === 'POST' && (path.endsWith('/git-upload-pack') || path.endsWith('/git-receive-pack'))) {
      service = path.endsWith('/git-upload-pack') ? 'git-upload-pack' : 'git-receive-pack';
      endpoint = 'rpc';
      repoPath = path.slice(0, path.lastIndexOf('/'));
    }
    if (!service || !endpoint || !repoPath || repoPath.split('/').includes('..')) {
      return void reply.code(404).type('text/plain').send('gatehouse: only Git\'s smart HTTP protocol is served here (/git/<connection>/<repo>/info/refs?service=…)\n');
    }

    const admitted = await this.admit(req, reply, connectionName, repoPath, service);
    if (!admitted) return;
    reply.hijack();
    const res = reply.raw;
    let endReason = 'request complete';
    try {
      if (endpoint === 'advertise') await this.advertise(req, res, admitted, service, query.toString());
      else if (service === 'git-upload-pack') await this.fetch(req, res, admitted);
      else await this.push(req, res, admitted);
      if (admitted.killed) endReason = admitted.killed;
    } catch (err) {
      endReason = admitted.killed ?? `failed: ${(err as Error).message}`;
      if (admitted.killed) {
        // Answered (401) or cut off by kill().
      } else {
        this.ctx.log.warn({ err: (err as Error).message, connection: connectionName }, 'git http request failed');
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(`gatehouse: ${(err as Error).message}\n`);
        else res.destroy();
      }
    } finally {
      await admitted.rec.end(endReason).catch(() => {});
      admitted.open.closed();
    }
  }

  /**
   * Revocation, expiry or an administrator ends a request in flight: 401 if nothing was answered
   * yet, otherwise the response is cut off (the next request is refused at sign-in).
   */
  private kill(a: { killed: string | null; abort: AbortController }, res: ServerResponse, reason: string): void {
    a.killed = reason;
    a.abort.abort(new Error(`session ended: ${reason}`));
    if (!res.headersSent) {
      res.writeHead(401, { 'www-authenticate': REALM, 'content-type': 'text/plain', connection: 'close' }).end(`gatehouse: session ended: ${reason}\n`);
    } else {
      res.destroy();
    }
  }

  // ── Sign-in and access ────────────────────────────────────────────────────

  private async admit(req: FastifyRequest, reply: FastifyReply, connectionName: string, repoPath: string, service: Service): Promise<Admitted | null> {
    const send = async (status: number, message: string) => {
      if (status === 401) reply.header('www-authenticate', REALM);
      await reply.code(status).type('text/plain').send(`gatehouse: ${message}\n`);
      return null;
    };
    const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!basic) return send(401, 'sign in with a gatehouse token as the password');
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const user = decoded.slice(0, Math.max(0, decoded.indexOf(':')));
    const token = decoded.slice(decoded.indexOf(':') + 1);
    const request = { method: req.method, service, repo: repoPath };
    const attempt: Attempt = {
      protocol: 'git-http', clientAddr: req.ip, applicationName: String(req.headers['user-agent'] ?? ''),
      connectionName, claimedName: user, targetDatabase: repoPath, details: { request },
    };
    // The basic-auth user name is not checked: git clients send whatever the URL says ("x").
    const principal = await this.ctx.admission.authenticate(attempt, token, { authMethod: 'token (http basic)' });
    if (isRefusal(principal)) return send(401, INVALID_TOKEN);
    const authorized = await this.ctx.admission.authorize(attempt, principal, 'git-http', { missing: `there is no Git HTTP connection named "${connectionName}"` });
    if (isRefusal(authorized)) return send(authorized.kind === 'no-connection' ? 404 : 403, authorized.message);
    const { connection: conn, access } = authorized;
    const state = { killed: null as string | null, abort: new AbortController() };
    let open: OpenSession;
    try {
      open = await this.ctx.admission.open(attempt, principal, conn,
        { auth: { method: 'token (http basic)', tokenId: principal.token!.id }, request, access }, (reason) => this.kill(state, reply.raw, reason));
    } catch {
      return send(503, 'the gateway cannot record right now; nothing was sent to the target');
    }
    return Object.assign(state, { identity: principal.identity, conn, rec: open.recording, open, target: new GitTarget(conn, this.ctx.secrets, this.ctx.dialer, state.abort.signal), repoPath });
  }

  // ── Endpoints ─────────────────────────────────────────────────────────────

  private async advertise(req: FastifyRequest, res: import('node:http').ServerResponse, a: Admitted, service: Service, query: string): Promise<void> {
    await a.rec.beforeForward('git.command', { service, repo: a.repoPath, request: 'advertisement' });
    const up = await a.target.request({ method: 'GET', path: `${a.repoPath}/info/refs`, query, headers: passHeaders(req) });
    let bytes = 0;
    if (refusedCredential(up, res)) {
      a.rec.append('git.advertise', { service, repo: a.repoPath, status: up.statusCode, bytesToClient: 0, problem: 'the target refused the stored credential' });
      return;
    }
    res.writeHead(up.statusCode ?? 502, pick(up.headers));
    for await (const c of up) {
      bytes += (c as Buffer).length;
      await pass(res, up, c as Buffer);
    }
    res.end();
    a.rec.append('git.advertise', { service, repo: a.repoPath, status: up.statusCode, bytesToClient: bytes });
  }

  private async fetch(req: FastifyRequest, res: import('node:http').ServerResponse, a: Admitted): Promise<void> {
    await a.rec.beforeForward('git.command', { service: 'git-upload-pack', repo: a.repoPath });
    const reader = new UploadPackRequestReader({ protocol: /version=2/.test(String(req.headers['git-protocol'] ?? '')) ? 2 : 0 });
    let unparsed: string | null = null;
    const body = decodedBody(req);
    const observed = new PassThrough();
    body.on('data', (c: Buffer) => {
      if (!unparsed) {
        try { reader.push(c); } catch (err) { unparsed = (err as Error).message; }
      }
    });
    body.pipe(observed);
    const up = await a.target.request({ method: 'POST', path: `${a.repoPath}/git-upload-pack`, headers: { ...passHeaders(req), 'content-type': 'application/x-git-upload-pack-request' }, body: observed });
    const bytes = await relayResponse(up, res);
    a.rec.append('git.fetch', { service: 'git-upload-pack', repo: a.repoPath, ...reader.summary, status: up.statusCode, bytesToClient: bytes, ...(unparsed ? { unparsed } : {}) });
  }

  private async push(req: FastifyRequest, res: import('node:http').ServerResponse, a: Admitted): Promise<void> {
    await a.rec.beforeForward('git.command', { service: 'git-receive-pack', repo: a.repoPath });
    const protect = a.conn.options.protect ?? [];
    const body = decodedBody(req);
    const request = new PushRequestReader();
    const held: Buffer[] = [];
    // Read the command list (held, not yet forwarded); the body stays open for the pack.
    for await (const c of body.iterator({ destroyOnReturn: false })) {
      held.push(c as Buffer);
      request.push(c as Buffer);
      if (request.phase === 'pack') break;
    }
    const format = (capabilityValue(request.capabilities, 'object-format') ?? 'sha1') as ObjectFormat;
    const pack = new PackCopy();
    if (request.phase === 'pack') for (const c of request.takePackBytes()) pack.add(c);
    let decided: RecordedUpdate[];
    let wholeBody = false;
    if (needsPackBeforeForward(request.updates, protect)) {
      // Hold the whole pack until every protected update is decided.
      pack.limit = MAX_GUARDED_PACK_BYTES;
      for await (const c of body) {
        held.push(c as Buffer);
        pack.add(c as Buffer);
      }
      wholeBody = true;
      decided = await decideUpdates(request.updates, pack.pack(), format, protect,
        (tips, have) => a.target.probe(a.repoPath, tips, have).then((r) => {
          a.rec.append('git.probe', { repo: a.repoPath, tips, have, answered: r !== null, commits: r?.size ?? 0 });
          return r;
        }), pack.problem);
    } else {
      decided = await decideUpdates(request.updates, null, format, protect, undefined, 'pack not inspected before forwarding');
    }
    const record = { repo: a.repoPath, updates: decided, pushOptions: request.pushOptions, capabilities: request.capabilities, ...(wholeBody ? { packBytes: pack.bytes } : {}) };
    if (decided.some((u) => !u.allowed)) {
      await a.rec.beforeForward('git.push', { ...record, verdict: 'refused' })?.catch(() => {});
      pack.countOnly();
      if (!wholeBody) for await (const c of body) pack.add(c as Buffer); // drain
      res.writeHead(200, { 'content-type': 'application/x-git-receive-pack-result', 'cache-control': 'no-cache' });
      res.end(refusalReport(request.capabilities, decided));
      a.rec.append('git.push.result', { repo: a.repoPath, ...refusedPushResult(decided, pack.bytes) });
      return;
    }
    await a.rec.beforeForward('git.push', { ...record, verdict: 'allowed' });

    // Forward what was held, then (if not yet read) the rest, keeping a bounded copy to classify.
    const forward = new PassThrough();
    for (const c of held) forward.write(c);
    if (wholeBody) forward.end();
    else {
      body.on('data', (c: Buffer) => pack.add(c));
      body.pipe(forward);
    }
    const up = await a.target.request({ method: 'POST', path: `${a.repoPath}/git-receive-pack`, headers: { ...passHeaders(req), 'content-type': 'application/x-git-receive-pack-request' }, body: forward }, 600_000);
    const report = new ReportStatusReader(request.capabilities);
    const bytes = await relayResponse(up, res, (c) => { try { report.push(c); } catch { /* observation only */ } });
    const result = await forwardedPushResult(request.updates, pack, format, decided, report.result);
    a.rec.append('git.push.result', { repo: a.repoPath, ...result, status: up.statusCode, bytesToClient: bytes });
  }
}

/** Writes a chunk of the target's answer, with backpressure; throws once the response is gone (ended by the gateway or the client). */
async function pass(res: ServerResponse, up: import('node:http').IncomingMessage, c: Buffer): Promise<void> {
  if (res.destroyed) {
    up.destroy();
    throw new Error('the response was closed');
  }
  if (res.write(c)) return;
  await new Promise<void>((resolve) => {
    const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** The request body as Git wrote it: clients gzip large fetch requests. */
function decodedBody(req: FastifyRequest): Readable {
  const raw = req.body as Readable;
  const enc = String(req.headers['content-encoding'] ?? '').toLowerCase();
  if (enc === 'gzip' || enc === 'x-gzip') return raw.pipe(zlib.createGunzip());
  return raw;
}

/**
 * The target refusing the connection's own credential is the gateway's problem, not the user's:
 * a 401 passed on would make git discard a valid gatehouse token. Answered as 502 instead.
 */
function refusedCredential(up: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): boolean {
  if (up.statusCode !== 401 && up.statusCode !== 403) return false;
  up.resume();
  res.writeHead(502, { 'content-type': 'text/plain' }).end(`gatehouse: the target refused the connection's stored credential (HTTP ${up.statusCode})\n`);
  return true;
}

function passHeaders(req: FastifyRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ['git-protocol', 'accept']) {
    const v = req.headers[name];
    if (typeof v === 'string') out[name] = v;
  }
  return out;
}

function pick(headers: import('node:http').IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of PASSED_HEADERS) {
    const v = headers[name];
    if (typeof v === 'string') out[name] = v;
  }
  return out;
}

async function relayResponse(up: import('node:http').IncomingMessage, res: import('node:http').ServerResponse, observe?: (c: Buffer) => void): Promise<number> {
  let bytes = 0;
  if (refusedCredential(up, res)) return 0;
  res.writeHead(up.statusCode ?? 502, pick(up.headers));
  for await (const c of up) {
    bytes += (c as Buffer).length;
    observe?.(c as Buffer);
    await pass(res, up, c as Buffer);
  }
  res.end();
  return bytes;
}
