// Git over smart HTTP: `http(s)://<gateway>/git/<connection>/<repo path>`, served on the API's
// HTTP listener. Clients sign in with a gatehouse token as the basic-auth password. Each request
// (advertisement, fetch, push) is one recorded session; pushes get the same protected-ref
// guard as over SSH (src/engines/git/push-guard.ts), and a refused push never reaches the target.
import { policySubject } from '../../policy/policy-service.ts';
import { refPolicyOf } from '../git/push-guard.ts';
import { PassThrough, pipeline, Transform, type Readable } from 'node:stream';
import zlib from 'node:zlib';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Engine, EngineContext } from '../engine.ts';
import type { Connection, Identity } from '../../store/types.ts';
import type { SessionRecording } from '../../recorder/recorder.ts';
import { INVALID_TOKEN, isRefusal, type Attempt, type OpenSession } from '../../access/admission.ts';
import { ReportStatusReader } from '../git/receive-pack.ts';
import { UploadPackRequestReader } from '../git/upload-pack.ts';
import { HeldPush } from '../git/push-hold.ts';
import { SessionHolds } from '../../approvals/session-holds.ts';
import { encodeSideband, negotiatedSideband } from '../git/sideband.ts';
import { defaultPushLimits, type PushLimits } from '../git/push-limits.ts';
import { GitTarget } from './target-client.ts';

type Service = 'git-upload-pack' | 'git-receive-pack';
const REALM = 'Basic realm="Gatehouse", charset="UTF-8"';
/** Response headers of the target that are passed on to the git client. */
const PASSED_HEADERS = ['content-type', 'cache-control', 'expires', 'pragma'];

interface Admitted { identity: Identity; conn: Connection; rec: SessionRecording; open: OpenSession; target: GitTarget; repoPath: string; killed: string | null; abort: AbortController }

export class GitHttpEngine implements Engine {
  readonly protocol = 'git-http';
  private readonly ctx: EngineContext;
  private readonly limits: PushLimits;

  constructor(ctx: EngineContext, limits: PushLimits = defaultPushLimits()) {
    this.ctx = ctx;
    this.limits = limits;
  }

  /** Requests in flight, ended when the gateway stops (a held push among them is withdrawn). */
  private readonly inFlight = new Map<Admitted, ServerResponse>();

  async close(): Promise<void> {
    for (const [a, res] of this.inFlight) this.kill(a, res, 'gateway shutdown');
  }

  /** Mounted on the API server (see src/api/server.ts). */
  routes = async (app: FastifyInstance): Promise<void> => {
    // Bodies stay streams: packs can be large and are relayed, not parsed by fastify.
    app.addContentTypeParser(['application/x-git-upload-pack-request', 'application/x-git-receive-pack-request'], (_req, payload, done) => done(null, payload));
    const handler = (req: FastifyRequest, reply: FastifyReply) => this.handle(req, reply);
    app.get('/git/*', handler);
    app.post('/git/*', { bodyLimit: Number.MAX_SAFE_INTEGER }, handler);
    // The API server's close waits for requests in flight: a push held for approval (minutes) or a
    // long fetch would keep the gateway from stopping, so they are ended first.
    app.addHook('preClose', async () => { await this.close(); });
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
    this.inFlight.set(admitted, res);
    try {
      if (endpoint === 'advertise') await this.advertise(req, res, admitted, service, query.toString());
      // fetch and push name the reason when they answered with a refusal of their own.
      else endReason = (service === 'git-upload-pack' ? await this.fetch(req, res, admitted) : await this.push(req, res, admitted)) ?? endReason;
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
      this.inFlight.delete(admitted);
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
    if (isRefusal(principal)) {
      if (principal.kind !== 'rate-limited') return send(401, INVALID_TOKEN);
      reply.header('retry-after', String(principal.retryAfterSeconds ?? 60));
      return send(429, principal.message);
    }
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

  private async fetch(req: FastifyRequest, res: import('node:http').ServerResponse, a: Admitted): Promise<string | undefined> {
    await a.rec.beforeForward('git.command', { service: 'git-upload-pack', repo: a.repoPath });
    const reader = new UploadPackRequestReader({ protocol: /version=2/.test(String(req.headers['git-protocol'] ?? '')) ? 2 : 0 });
    let unparsed: string | null = null;
    const body = decodedBody(req, this.limits.maxPushBytes);
    const observed = new PassThrough();
    let bodyError = null as Error | null;
    body.on('data', (c: Buffer) => {
      if (!unparsed) {
        try { reader.push(c); } catch (err) { unparsed = (err as Error).message; }
      }
    });
    pipeline(body, observed, (err) => { if (err) bodyError = err; });
    const tooLarge = () => cutOff.get(body) ?? (bodyError instanceof BodyTooLarge ? bodyError : null);
    let up: import('node:http').IncomingMessage;
    try {
      up = await a.target.request({ method: 'POST', path: `${a.repoPath}/git-upload-pack`, headers: { ...passHeaders(req), 'content-type': 'application/x-git-upload-pack-request' }, body: observed });
    } catch (err) {
      const big = tooLarge();
      if (!big) throw err;
      a.rec.append('git.fetch', { service: 'git-upload-pack', repo: a.repoPath, ...reader.summary, status: 413, bytesToClient: 0, problem: big.message });
      if (!res.headersSent) res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end(`gatehouse: ${big.message}\n`);
      return `refused: ${big.message}`;
    }
    let bytes: number;
    try {
      bytes = await relayResponse(up, res);
    } catch (err) {
      const big = tooLarge();
      if (!big) throw err;
      // The target had started answering: the answer is cut off, and the record says why.
      a.rec.append('git.fetch', { service: 'git-upload-pack', repo: a.repoPath, ...reader.summary, status: up.statusCode, problem: big.message });
      throw new Error(big.message);
    }
    a.rec.append('git.fetch', { service: 'git-upload-pack', repo: a.repoPath, ...reader.summary, status: up.statusCode, bytesToClient: bytes, ...(unparsed ? { unparsed } : {}) });
    return undefined;
  }

  private async push(req: FastifyRequest, res: import('node:http').ServerResponse, a: Admitted): Promise<string | undefined> {
    await a.rec.beforeForward('git.command', { service: 'git-receive-pack', repo: a.repoPath });
    const body = decodedBody(req, this.limits.maxPushBytes);
    const holds = new SessionHolds(this.ctx.approvals, a.rec, { requester: a.identity, connection: { id: a.conn.id, name: a.conn.name }, protocol: 'git-http' });
    // The hold / decide / replay-or-refuse machine shared with SSH (src/engines/git/push-hold.ts).
    const push = new HeldPush({
      protect: a.conn.options.protect ?? [], limits: this.limits, rec: a.rec, recordBase: { repo: a.repoPath },
      // Who and where are fixed for the request; the policy judges its ref updates beside protected refs.
      policy: refPolicyOf(this.ctx.policy.forSession(await policySubject(this.ctx.identity.access, a.identity), { connection: a.conn.name, type: a.conn.type, protect: a.conn.options.protect })),
      objectFormat: () => 'sha1', // the client names sha256 in its capabilities
      holds: { hold: (verdict, action) => holds.hold(verdict, action) },
      // With side-band the answer can start at once: the notice is a progress message git shows
      // as "remote: …" while it waits; the target's answer follows in the same response.
      notify: (message) => {
        const band = negotiatedSideband(push.request.capabilities);
        if (band === null || res.headersSent) return;
        res.writeHead(200, { 'content-type': 'application/x-git-receive-pack-result', 'cache-control': 'no-cache' });
        for (const pkt of encodeSideband(2, Buffer.from(`${message.replace(/[\x00-\x1f\x7f]/g, '?')}\n`), band)) res.write(pkt);
      },
      askTarget: (tips, have) => a.target.probe(a.repoPath, tips, have).then((r) => {
        a.rec.append('git.probe', { repo: a.repoPath, tips, have, answered: r !== null, commits: r?.size ?? 0 });
        return r;
      }),
    });
    let bodyError = null as Error | null;
    body.on('error', (err: Error) => { bodyError = err; push.abort(err.message); });
    req.raw.on('close', () => { if (!req.raw.complete) push.abort('the client closed the request'); });
    // Gone after sending it all (while its push is held, say): nothing may be applied later for it.
    res.on('close', () => { if (!res.writableFinished) push.abort('the client went away'); });
    body.pipe(push);
    const outcome = await push.outcome;
    const tooLarge = () => cutOff.has(body) || bodyError instanceof BodyTooLarge;
    if (outcome.kind === 'fail') {
      if (res.headersSent) res.destroy();
      else {
        const status = tooLarge() ? 413 : /cannot record/.test(outcome.message) ? 503 : 400;
        res.writeHead(status, { 'content-type': 'text/plain', connection: 'close' }).end(`gatehouse: ${outcome.message}\n`);
      }
      return `refused: ${outcome.message}`;
    }
    if (outcome.kind === 'refuse') {
      if (!res.headersSent) res.writeHead(200, { 'content-type': 'application/x-git-receive-pack-result', 'cache-control': 'no-cache' });
      res.end(outcome.report);
      return undefined;
    }
    let up: import('node:http').IncomingMessage;
    try {
      up = await a.target.request({ method: 'POST', path: `${a.repoPath}/git-receive-pack`, headers: { ...passHeaders(req), 'content-type': 'application/x-git-receive-pack-request' }, body: outcome.body }, 600_000);
    } catch (err) {
      const big = cutOff.get(body);
      if (!big) throw err;
      // An inflated body over the limit while streaming: the target's request was cut off mid-pack.
      if (!res.headersSent) res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end(`gatehouse: ${big.message}\n`);
      return `refused: ${big.message}`;
    }
    const report = new ReportStatusReader(push.request.capabilities);
    const bytes = await relayResponse(up, res, (c) => { try { report.push(c); } catch { /* observation only */ } });
    if (push.request.phase === 'pack') await push.recordForwarded(report.result, { status: up.statusCode, bytesToClient: bytes });
    return undefined;
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

/** An inflated request body that passed the limit (a decompression bomb, or just too much). */
class BodyTooLarge extends Error {}

/** Bodies cut off at the limit, known at once (before the errors travel down the pipes). */
const cutOff = new WeakMap<Readable, BodyTooLarge>();

/**
 * The request body as Git wrote it: clients gzip large fetch requests. What a gzip body inflates
 * to is bounded by `maxBytes` (git.max_push_bytes): past it the inflater is stopped and the body
 * errors with BodyTooLarge, so a small bomb cannot make the gateway inflate gigabytes.
 */
function decodedBody(req: FastifyRequest, maxBytes: number): Readable {
  const raw = req.body as Readable;
  const enc = String(req.headers['content-encoding'] ?? '').toLowerCase();
  if (enc !== 'gzip' && enc !== 'x-gzip') return raw;
  let bytes = 0;
  const gunzip = zlib.createGunzip();
  const limited = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      if (bytes <= maxBytes) return cb(null, chunk);
      // Stop inflating; the rest of the (compressed) request is read and dropped, so that the
      // connection stays usable for the answer.
      raw.unpipe(gunzip);
      raw.resume();
      gunzip.destroy();
      const err = new BodyTooLarge(`the request body inflates to more than ${maxBytes} bytes (git.max_push_bytes)`);
      cutOff.set(limited, err);
      cb(err);
    },
  });
  raw.on('error', (err: Error) => limited.destroy(err));
  gunzip.on('error', (err: Error) => limited.destroy(err));
  raw.pipe(gunzip).pipe(limited);
  return limited;
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
  if (res.headersSent) {
    // The answer was started by the gateway (a held push's notice): only a success can follow in it.
    if (up.statusCode !== 200) {
      up.resume();
      res.destroy();
      throw new Error(`the target answered HTTP ${up.statusCode} after the push was approved`);
    }
  } else {
    if (refusedCredential(up, res)) return 0;
    res.writeHead(up.statusCode ?? 502, pick(up.headers));
  }
  for await (const c of up) {
    bytes += (c as Buffer).length;
    observe?.(c as Buffer);
    await pass(res, up, c as Buffer);
  }
  res.end();
  return bytes;
}
