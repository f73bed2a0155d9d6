// One client's SSH connection to the gateway: authenticates the identity (a registered public
// key, or a token typed at the password / keyboard-interactive prompt), checks the grant on the
// connection named by the SSH user, logs into the target with the stored credential, and hands
// each channel to the recording relays. Refusals after sign-in are shown on the channel the
// client opens (so ssh, scp and git print them) and recorded.
import type { PushLimits } from '../git/push-limits.ts';
import type { AuthContext, Connection as SshConnection, ClientInfo, TcpipRequestInfo } from 'ssh2';
import ssh2 from 'ssh2';
import type { Logger } from 'pino';
import type { EngineContext } from '../engine.ts';
import type { Connection } from '../../store/types.ts';
import type { SessionRecording } from '../../recorder/recorder.ts';
import { INVALID_TOKEN, isRefusal, type Attempt, type OpenSession, type Principal } from '../../access/admission.ts';
import { disconnectWithReason } from './disconnect.ts';
import { fingerprintOf } from './keys.ts';
import { connectUpstream, UpstreamRefusal } from './upstream.ts';
import { SessionChannel, type ChannelContext } from './session-channel.ts';
import { Forwarding } from './forwarding.ts';
import { AgentRelay } from './agent-relay.ts';
import { SessionHolds } from '../../approvals/session-holds.ts';
import { policySubject, type SessionPolicy } from '../../policy/policy-service.ts';
import { refPolicyOf } from '../git/push-guard.ts';
import { maskingKey } from '../../masking/detectors.ts';

export interface SshSessionOptions {
  upstreamTimeoutMs: number;
  /** Failed sign-in attempts before the connection is dropped. */
  maxAuthAttempts: number;
  /** Guarded Git pushes: byte limit and spool directory (src/engines/git/push-limits.ts). */
  gitPush?: PushLimits;
}

const DEFAULT_ALLOWED_ENV = ['GIT_PROTOCOL', 'LANG', 'LC_*'];

type Admission =
  | { ok: true; rec: SessionRecording; target: ssh2.Client; conn: Connection; agent: AgentRelay | null; policy: SessionPolicy; holds: SessionHolds }
  | { ok: false; message: string };

export class SshClientSession {
  private readonly ctx: EngineContext;
  private readonly client: SshConnection;
  private readonly info: ClientInfo;
  private readonly options: SshSessionOptions;
  private readonly log: Logger;
  private principal: Principal | null = null;
  private auth: Record<string, unknown> = {};
  private open: OpenSession | null = null;
  /** The client connection has closed (possibly while the target login was still under way). */
  private gone = false;
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
    // ssh -L to a Unix socket: refused, but only after admission, so that the refusal is recorded.
    client.on('openssh.streamlocal', (_accept, reject, info) => {
      void this.withAdmission((a) => (a.ok ? this.forwarding(a).directStreamLocal(reject, info) : reject()));
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
        this.gone = true;
        this.holds?.withdrawAll('the client disconnected');
        this.finish(this.endReason ?? 'client disconnected').finally(resolve);
      });
    });
  }

  /** Ends the session from the gateway's side (shutdown, revocation, an administrator): the client is told why. */
  shutdown(reason: string): void {
    this.endReason ??= reason;
    disconnectWithReason(this.client, `gatehouse: ${reason}`);
    // The target's side goes too: its channels (a running command) end, and with them the session.
    this.target?.end();
  }

  /** The attempt as admission records it: the SSH user names the connection. */
  private attempt(connectionName: string): Attempt {
    return {
      protocol: 'ssh', clientAddr: this.info.ip, applicationName: this.info.header.versions.software ?? '', connectionName,
      details: { auth: this.auth, clientVersion: this.info.header.identRaw },
    };
  }

  private channelContext(a: Extract<Admission, { ok: true }>): ChannelContext {
    return {
      rec: a.rec, target: a.target, log: this.log, sampleBytes: this.ctx.recorder.options.sampleBytes,
      allowEnv: a.conn.options.allowEnv ?? DEFAULT_ALLOWED_ENV,
      agent: a.agent,
      git: { rec: a.rec, protect: a.conn.options.protect ?? [], log: this.log, target: a.target, limits: this.options.gitPush, policy: refPolicyOf(a.policy), holds: a.holds },
      gitOnly: a.conn.options.gitOnly === true,
      track: (done) => this.track(done),
      policy: a.policy,
      holds: a.holds,
      maskKey: maskingKey(this.ctx.secrets.derive('masking')),
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
        return this.signedIn(auth, this.ctx.admission.principalForKey(identity, fingerprint), { method: 'publickey', fingerprint });
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
    const signedIn = await this.ctx.admission.authenticate(this.attempt(auth.username), token.trim(), { authMethod: `token (${method})`, method });
    if (isRefusal(signedIn) && signedIn.kind === 'rate-limited') {
      // Locked out: the connection ends with the reason (a USERAUTH_FAILURE first would have
      // the client give up with "all methods failed" before it reads why).
      this.log.debug({ user: auth.username }, 'ssh sign-in refused: address locked out');
      disconnectWithReason(this.client, `gatehouse: ${signedIn.message}`);
      return;
    }
    if (isRefusal(signedIn)) {
      if (auth.method === 'keyboard-interactive') {
        // An info request without prompts is how a server shows a message during sign-in.
        auth.prompt([], 'Gatehouse', `gatehouse: ${INVALID_TOKEN}`, () => this.failed(auth, methods, signedIn.reason));
        return;
      }
      return this.failed(auth, methods, signedIn.reason);
    }
    return this.signedIn(auth, signedIn, { method: `token (${method})`, tokenId: signedIn.token!.id });
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

  private signedIn(auth: AuthContext, principal: Principal, how: Record<string, unknown>): void {
    this.principal = principal;
    this.auth = how;
    this.connectionName = auth.username;
    auth.accept();
  }

  private connectionName = '';

  // ── Admission: grant, recording, target login ──────────────────────────────

  private async admit(): Promise<Admission> {
    const principal = this.principal!;
    const identity = principal.identity;
    const attempt = this.attempt(this.connectionName);
    const authorized = await this.ctx.admission.authorize(attempt, principal, 'ssh', {
      missing: `there is no SSH connection named "${this.connectionName}" (connect as <connection>@gateway)`,
    });
    if (isRefusal(authorized)) return { ok: false, message: authorized.message };
    const { connection: conn, access } = authorized;
    // Who and where are fixed for the session; each channel asks the policy about its exec, shell and file changes.
    let policy: SessionPolicy;
    try {
      policy = this.ctx.policy.forSession(await policySubject(this.ctx.identity.access, identity), { connection: conn.name, type: conn.type, protect: conn.options.protect });
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'cannot tell who the identity is for the policy; refusing');
      return { ok: false, message: 'the gateway cannot check this session against the policy right now; refusing to connect' };
    }
    let rec: SessionRecording;
    try {
      this.open = await this.ctx.admission.open(attempt, principal, conn, { auth: this.auth, clientVersion: this.info.header.identRaw, access }, (reason) => this.shutdown(reason));
      rec = this.open.recording;
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'cannot record session start; refusing');
      return { ok: false, message: 'the gateway cannot record sessions right now; refusing to connect' };
    }
    try {
      const agent = (conn.options.allowForwarding ?? []).includes('agent') ? this.agentRelay(rec) : null;
      const target = await connectUpstream(conn, this.ctx.dialer, this.ctx.secrets, this.options.upstreamTimeoutMs, agent ?? undefined);
      if (this.gone) {
        // Ended (revoked, killed, or the client left) while logging in to the target.
        target.end();
        await rec.end(this.endReason ?? 'client disconnected').catch(() => {});
        this.open.closed();
        return { ok: false, message: this.endReason ?? 'client disconnected' };
      }
      this.recording = rec;
      this.target = target;
      target.on('close', () => {
        this.endReason ??= 'target closed the connection';
        disconnectWithReason(this.client, `gatehouse: ${this.endReason}`);
      });
      this.log.info({ session: rec.id, identity: identity.name, connection: conn.name }, 'ssh session started');
      // Actions the policy holds wait for people to decide; the session's end withdraws them.
      const holds = new SessionHolds(this.ctx.approvals, rec, { requester: identity, connection: { id: conn.id, name: conn.name }, protocol: 'ssh' });
      this.holds = holds;
      return { ok: true, rec, target, conn, agent, policy, holds };
    } catch (err) {
      const message = err instanceof UpstreamRefusal ? err.message : `cannot connect to the target of connection "${conn.name}"`;
      this.log.warn({ connection: conn.name, err: (err as Error).message }, 'ssh target login failed');
      rec.append('access.denied', { message });
      await rec.end(`refused: ${message}`).catch(() => {});
      this.open.closed();
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
      let toClient = 0;
      let toTarget = 0;
      r.channel.on('data', (c: Buffer) => { toTarget += c.length; });
      const counter = (c: Buffer) => { toClient += c.length; };
      r.channel.once('pipe', (src: NodeJS.ReadableStream) => src.on('data', counter));
      r.channel.once('close', () => rec.append('ssh.forward.closed', { kind: 'agent', bytesToClient: toClient, bytesToTarget: toTarget }));
    }, () => rec.beforeForward('ssh.forward.opened', { kind: 'agent' }));
  }

  private recording: SessionRecording | null = null;
  private target: ssh2.Client | null = null;
  private holds: SessionHolds | null = null;

  private async finish(reason: string): Promise<void> {
    await Promise.allSettled([...this.channels]);
    this.target?.end();
    if (this.recording && !this.recording.isEnded) {
      await this.recording.end(reason).catch((err: Error) => this.log.error({ err: err.message }, 'could not record session end'));
      this.log.info({ session: this.recording.id, reason }, 'ssh session ended');
    }
    this.open?.closed();
  }
}
