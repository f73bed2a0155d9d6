// One client's SSH connection to the gateway: authenticates the identity (a registered public
// key, or a token typed at the password / keyboard-interactive prompt), checks the grant on the
// connection named by the SSH user, logs into the target with the stored credential, and hands
// each channel to the recording relays. Refusals after sign-in are shown on the channel the
// client opens (so ssh, scp and git print them) and recorded.
import type { AuthContext, Connection as SshConnection, ClientInfo, TcpipRequestInfo } from 'ssh2';
import ssh2 from 'ssh2';
import type { Logger } from 'pino';
import type { EngineContext } from '../engine.ts';
import type { Connection, Identity } from '../../store/types.ts';
import type { Decision } from '../../access/access-policy.ts';
import type { SessionRecording, SessionStartInfo } from '../../recorder/recorder.ts';
import { fingerprintOf } from './keys.ts';
import { connectUpstream, UpstreamRefusal } from './upstream.ts';
import { SessionChannel, type ChannelContext } from './session-channel.ts';
import { Forwarding } from './forwarding.ts';
import { AgentRelay } from './agent-relay.ts';

export interface SshSessionOptions {
  upstreamTimeoutMs: number;
  /** Failed sign-in attempts before the connection is dropped. */
  maxAuthAttempts: number;
}

const DEFAULT_ALLOWED_ENV = ['GIT_PROTOCOL', 'LANG', 'LC_*'];

type Admission =
  | { ok: true; rec: SessionRecording; target: ssh2.Client; conn: Connection; agent: AgentRelay | null }
  | { ok: false; message: string };

export class SshClientSession {
  private readonly ctx: EngineContext;
  private readonly client: SshConnection;
  private readonly info: ClientInfo;
  private readonly options: SshSessionOptions;
  private readonly log: Logger;
  private identity: Identity | null = null;
  private auth: Record<string, unknown> = {};
  private failures = 0;
  private channelCount = 0;
  private admission: Promise<Admission> | null = null;
  private readonly channels = new Set<Promise<void>>();
  private endReason: string | null = null;
  /** Settles once the session is recorded as ended (or was never admitted). */
  readonly closed: Promise<void>;

  constructor(ctx: EngineContext, client: SshConnection, info: ClientInfo, options: SshSessionOptions) {
    this.ctx = ctx;
    this.client = client;
    this.info = info;
    this.options = options;
    this.log = ctx.log.child({ component: 'ssh', client: `${info.ip}:${info.port}` });
    client.on('authentication', (auth) => {
      this.authenticate(auth).catch((err: Error) => {
        this.log.error({ err: err.message }, 'ssh authentication failed unexpectedly');
        auth.reject();
      });
    });
    client.on('ready', () => {
      this.admission = this.admit();
      // A refused connection is closed once its channels have had time to show the refusal
      // (a client that opens none, e.g. ssh -N, would otherwise stay connected for nothing).
      void this.admission.then((a) => { if (!a.ok) setTimeout(() => this.client.end(), 3000).unref(); });
    });
    client.on('session', (accept) => {
      // Listeners go on at once: ssh2 rejects channel requests nobody listens for. They wait
      // for admission (grant check and target login) before answering.
      new SessionChannel(this.admission!.then((a) => (a.ok ? this.channelContext(a) : a.message)), accept(), ++this.channelCount);
    });
    client.on('tcpip', (accept, reject, req: TcpipRequestInfo) => {
      void this.withAdmission((a) => (a.ok ? this.forwarding(a).direct(accept, reject, req) : reject()));
    });
    client.on('request', (accept, reject, name, req) => {
      void this.withAdmission((a) => {
        if (!a.ok) return reject?.();
        this.forwarding(a).globalRequest(accept, reject, name, req as { bindAddr: string; bindPort: number });
      });
    });
    client.on('error', (err) => this.log.debug({ err: err.message }, 'ssh client connection error'));
    this.closed = new Promise((resolve) => {
      client.on('close', () => {
        this.finish(this.endReason ?? 'client disconnected').finally(resolve);
      });
    });
  }

  /** Ends the session from the gateway's side (shutdown). */
  shutdown(reason: string): void {
    this.endReason ??= reason;
    this.client.end();
  }

  private channelContext(a: Extract<Admission, { ok: true }>): ChannelContext {
    return {
      rec: a.rec, target: a.target, log: this.log, sampleBytes: this.ctx.recorder.options.sampleBytes,
      allowEnv: a.conn.options.allowEnv ?? DEFAULT_ALLOWED_ENV,
      agent: a.agent,
      git: { rec: a.rec, protect: a.conn.options.protect ?? [], log: this.log, target: a.target },
      track: (done) => this.track(done),
    };
  }

  private forwardingState: Forwarding | null = null;
  private forwarding(a: Extract<Admission, { ok: true }>): Forwarding {
    this.forwardingState ??= new Forwarding({
      client: this.client, target: a.target, rec: a.rec, log: this.log,
      allowed: a.conn.options.allowForwarding ?? [], track: (done) => this.track(done),
    });
    return this.forwardingState;
  }

  private track(done: Promise<void>): void {
    this.channels.add(done);
    void done.finally(() => this.channels.delete(done));
  }

  private async withAdmission(use: (a: Admission) => void): Promise<void> {
    if (!this.admission) return;
    use(await this.admission);
  }

  // ── Sign-in ───────────────────────────────────────────────────────────────

  private async authenticate(auth: AuthContext): Promise<void> {
    const methods = ['publickey', 'keyboard-interactive', 'password'] as Array<AuthContext['method']>;
    switch (auth.method) {
      case 'publickey': {
        const fingerprint = fingerprintOf(auth.key.data);
        const key = await this.ctx.store.getPublicKeyByFingerprint(fingerprint);
        if (!key) return auth.reject(methods);
        // Without a signature the client only asks whether this key would do.
        if (!auth.signature || !auth.blob) return auth.accept();
        const parsed = ssh2.utils.parseKey(key.publicKey);
        const pub = Array.isArray(parsed) ? parsed[0] : parsed;
        if (!pub || pub instanceof Error || pub.verify(auth.blob, auth.signature, auth.hashAlgo) !== true) return this.failed(auth, methods, 'bad public key signature');
        const identity = await this.ctx.store.getIdentity(key.identityId);
        if (!identity) return auth.reject(methods);
        return this.signedIn(auth, identity, { method: 'publickey', fingerprint });
      }
      case 'password': return this.tokenSignIn(auth, auth.password, methods, 'password');
      case 'keyboard-interactive':
        auth.prompt([{ prompt: 'Gatehouse token: ', echo: false }], 'Gatehouse', `Sign in to connection "${auth.username}" with a gatehouse token.`, (answers) => {
          void this.tokenSignIn(auth, answers[0] ?? '', methods, 'keyboard-interactive');
        });
        return;
      default:
        return auth.reject(methods);
    }
  }

  private async tokenSignIn(auth: AuthContext, token: string, methods: Array<AuthContext['method']>, method: string): Promise<void> {
    const check = await this.ctx.identity.checkToken(token.trim());
    if (!check.ok) {
      const reason = check.reason === 'unknown' ? 'invalid token' : `token ${check.reason}`;
      await this.recordRefusal(undefined, auth.username, `${reason} (${method})`);
      if (auth.method === 'keyboard-interactive') {
        // An info request without prompts is how a server shows a message during sign-in.
        auth.prompt([], 'Gatehouse', `gatehouse: ${reason}`, () => this.failed(auth, methods, reason));
        return;
      }
      return this.failed(auth, methods, reason);
    }
    return this.signedIn(auth, check.identity, { method: `token (${method})`, tokenId: check.token.id });
  }

  private failed(auth: AuthContext, methods: Array<AuthContext['method']>, reason: string): void {
    this.failures++;
    this.log.info({ user: auth.username, reason }, 'ssh sign-in failed');
    if (this.failures >= this.options.maxAuthAttempts) {
      auth.reject();
      this.client.end();
      return;
    }
    auth.reject(methods);
  }

  private signedIn(auth: AuthContext, identity: Identity, how: Record<string, unknown>): void {
    this.identity = identity;
    this.auth = how;
    this.connectionName = auth.username;
    auth.accept();
  }

  private connectionName = '';

  // ── Admission: grant, recording, target login ──────────────────────────────

  private async admit(): Promise<Admission> {
    const identity = this.identity!;
    const conn = await this.ctx.store.getConnectionByName(this.connectionName);
    if (!conn || conn.type !== 'ssh') {
      const message = `there is no SSH connection named "${this.connectionName}" (connect as <connection>@gateway)`;
      await this.recordRefusal(identity, this.connectionName, message);
      return { ok: false, message };
    }
    const access = await this.ctx.identity.decideConnect(identity, conn);
    if (!access.allowed) {
      const message = `identity "${identity.name}" has no grant on connection "${conn.name}"`;
      await this.recordRefusal(identity, conn.name, message, conn, access);
      return { ok: false, message };
    }
    let rec: SessionRecording;
    try {
      rec = await this.ctx.recorder.startSession(this.sessionInfo(identity, conn.name, conn), { auth: this.auth, clientVersion: this.info.header.identRaw, access });
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'cannot record session start; refusing');
      return { ok: false, message: 'the gateway cannot record sessions right now; refusing to connect' };
    }
    try {
      const agent = (conn.options.allowForwarding ?? []).includes('agent') ? this.agentRelay(rec) : null;
      const target = await connectUpstream(conn, this.ctx.dialer, this.ctx.secrets, this.options.upstreamTimeoutMs, agent ?? undefined);
      this.recording = rec;
      this.target = target;
      target.on('close', () => {
        this.endReason ??= 'target closed the connection';
        this.client.end();
      });
      this.log.info({ session: rec.id, identity: identity.name, connection: conn.name }, 'ssh session started');
      return { ok: true, rec, target, conn, agent };
    } catch (err) {
      const message = err instanceof UpstreamRefusal ? err.message : `cannot connect to the target of connection "${conn.name}"`;
      this.log.warn({ connection: conn.name, err: (err as Error).message }, 'ssh target login failed');
      rec.append('access.denied', { message });
      await rec.end(`refused: ${message}`).catch(() => {});
      return { ok: false, message };
    }
  }

  /** Relays the target's agent requests to the client; each use is recorded with its byte counts. */
  private agentRelay(rec: SessionRecording): AgentRelay {
    return new AgentRelay(this.client, (r) => {
      if (!r.ok || !r.channel) {
        rec.append('ssh.forward.failed', { kind: 'agent', message: r.message ?? 'the client refused the agent channel' });
        return;
      }
      rec.append('ssh.forward.opened', { kind: 'agent' });
      let toClient = 0;
      let toTarget = 0;
      r.channel.on('data', (c: Buffer) => { toTarget += c.length; });
      const counter = (c: Buffer) => { toClient += c.length; };
      r.channel.once('pipe', (src: NodeJS.ReadableStream) => src.on('data', counter));
      r.channel.once('close', () => rec.append('ssh.forward.closed', { kind: 'agent', bytesToClient: toClient, bytesToTarget: toTarget }));
    });
  }

  private recording: SessionRecording | null = null;
  private target: ssh2.Client | null = null;

  private async finish(reason: string): Promise<void> {
    await Promise.allSettled([...this.channels]);
    this.target?.end();
    if (this.recording && !this.recording.isEnded) {
      await this.recording.end(reason).catch((err: Error) => this.log.error({ err: err.message }, 'could not record session end'));
      this.log.info({ session: this.recording.id, reason }, 'ssh session ended');
    }
  }

  private sessionInfo(identity: Identity | undefined, connectionName: string, conn?: Connection): SessionStartInfo {
    return {
      protocol: 'ssh',
      identityId: identity?.id ?? '', identityName: identity?.name ?? '', identityKind: identity?.kind ?? 'unknown',
      clientAddr: this.info.ip, applicationName: this.info.header.versions.software ?? '',
      connectionId: conn?.id ?? '', connectionName, targetHost: conn?.host ?? '', targetPort: conn?.port ?? 0,
      targetDatabase: '', targetUser: conn?.username ?? '', recordingMode: conn?.options.recording ?? 'durable',
      identityClaims: identity?.claims ?? null, authMethod: identity && typeof this.auth.method === 'string' ? this.auth.method : null,
    };
  }

  private async recordRefusal(identity: Identity | undefined, connectionName: string, message: string, conn?: Connection, access?: Decision): Promise<void> {
    await this.ctx.recorder.recordRefusal(this.sessionInfo(identity, connectionName, conn),
      { auth: this.auth, clientVersion: this.info.header.identRaw, authenticated: identity !== undefined }, { message, ...(access ? { access } : {}) });
    this.log.info({ connection: connectionName, identity: identity?.name, reason: message }, 'ssh connection refused');
  }
}
