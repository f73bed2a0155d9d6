// One "session" channel of a client's SSH connection: collects its pty and environment
// requests, then opens the matching channel on the target (shell, exec or subsystem) and relays
// it, recording what the channel is for. Window changes and signals follow the channel through.
import type { ClientChannel, PseudoTtyInfo, ServerChannel, Session } from 'ssh2';
import type { Logger } from 'pino';
import type { SessionRecording } from '../../recorder/recorder.ts';
import { RecordingUnavailableError } from '../../recorder/recorder.ts';
import { ChannelAbortError, endWithExit, pump, watchExit, type ExitInfo, type HookResult, type RelayHooks } from './channel-relay.ts';
import { BoundedCapture } from './output-capture.ts';
import { ChannelOutputMasking, transfersFiles } from './output-masking.ts';
import { ExecStdinRecorder, stdinInterpreter } from './exec-stdin.ts';
import { readsShellCommands, StdinScriptGate } from './stdin-script-gate.ts';
import { TerminalRecorder } from './terminal-recorder.ts';
import { SftpTracker } from './sftp/sftp-tracker.ts';
import { ScpTracker, parseScpCommand } from './scp-tracker.ts';
import { relayGitService, type GitServiceOptions } from './git-service.ts';
import { canonicalGitCommand, recogniseExec, type ExecRequest } from './exec-command.ts';
import { matchesGlob } from '../../util/glob.ts';
import type { AgentRelay } from './agent-relay.ts';
import type { SessionPolicy } from '../../policy/policy-service.ts';
import type { Verdict } from '../../policy/types.ts';
import { decide, decideFile, policyField, refuses, shownToClient, type FilePolicy } from './policy-verdict.ts';
import { CANCEL_LINE, TerminalLineGate, type SubmittedLine } from './terminal-line-gate.ts';
import { holdNotice, verdictAfterHold, type SessionHolds } from '../../approvals/session-holds.ts';
import type { PolicyAction } from '../../policy/types.ts';

/** What a channel needs from its connection: the recording, the target, and the connection's policy. */
export interface ChannelContext {
  rec: SessionRecording;
  target: import('ssh2').Client;
  log: Logger;
  sampleBytes: number;
  allowEnv: string[];
  /** The agent relay of the connection, when it allows agent forwarding (null: refused). */
  agent: AgentRelay | null;
  git: Omit<GitServiceOptions, 'repoPath' | 'service' | 'channel'>;
  /** The connection runs nothing but recognised Git service requests (docs/git-push-protection.md). */
  gitOnly: boolean;
  /** Called when the channel opens and closes, so the connection can wait for its channels. */
  track(done: Promise<void>): void;
  /** The session's view of the policy (src/policy/): asked before each exec, shell, shell line and file change. */
  policy: SessionPolicy;
  /** Where an exec, shell or line the policy holds waits for people to decide. */
  holds: SessionHolds;
  /** Key of the mask rules' hash style (maskingKey of the gateway's key material). */
  maskKey: Buffer;
}

/** What the record says about a held action: its request and how it ended. */
interface HeldRecord { request: string; outcome: string }


type ChannelRequest = { kind: 'shell' } | { kind: 'exec'; command: string } | { kind: 'subsystem'; name: string };

export class SessionChannel {
  /** Set once the connection is admitted (before any request is answered). */
  private ctx!: ChannelContext;
  /** The channel's number within its session (1, 2, …), as events name it. */
  private readonly number: number;
  private pty: PseudoTtyInfo | null = null;
  private readonly env: Record<string, string> = {};
  private upstream: ClientChannel | null = null;
  private terminal: TerminalRecorder | null = null;
  private started = false;

  /** `ready` settles with the channel's context once the connection is admitted, or with the refusal to show. */
  constructor(ready: Promise<ChannelContext | string>, session: Session, number: number) {
    this.number = number;
    // Requests are answered at once, whatever admission decides: ssh2 drops a channel whose
    // client sends EOF before its exec is accepted, and replies must keep the requests' order.
    // Refusals and policy are applied when the channel starts (and then recorded).
    session.on('pty', (accept, _reject, info) => {
      this.pty = info;
      accept?.();
    });
    session.on('env', (accept, _reject, info) => {
      this.env[info.key] = info.val;
      accept?.();
    });
    session.on('window-change', (accept, _reject, info) => {
      if (this.pty) Object.assign(this.pty, { cols: info.cols, rows: info.rows, width: info.width, height: info.height });
      this.upstream?.setWindow(info.rows, info.cols, info.height, info.width);
      this.terminal?.resize(info.cols, info.rows);
      accept?.();
    });
    session.on('signal', (accept, _reject, info) => {
      this.ctx?.rec.append('ssh.signal', { ch: this.number, name: info.name, delivered: this.upstream !== null });
      this.upstream?.signal(info.name);
      accept?.();
    });
    // OpenSSH asks without wanting a reply; the connection's policy is applied when the channel starts.
    session.on('auth-agent', (accept) => {
      this.agentRequested = true;
      accept?.();
    });
    session.on('x11', (_accept, reject) => {
      this.forwardRefused = { kind: 'x11' };
      reject?.();
    });
    const start = (req: ChannelRequest, accept: () => ServerChannel | undefined, reject?: () => void) => {
      if (this.started) return reject?.();
      this.started = true;
      const client = accept();
      if (!client) return;
      client.pause();
      void ready.then((r) => {
        if (typeof r === 'string') return refuseChannel(client, r);
        this.ctx = r;
        let finished!: () => void;
        r.track(new Promise<void>((resolve) => { finished = resolve; }));
        this.run(req, client).catch((err: Error) => {
          r.log.warn({ err: err.message, ch: this.number }, 'ssh channel failed');
          if (client.writable) refuseChannel(client, 'internal error');
        }).finally(finished);
      });
    };
    session.on('shell', (accept, reject) => start({ kind: 'shell' }, accept, reject));
    session.on('exec', (accept, reject, info) => start({ kind: 'exec', command: info.command }, accept, reject));
    session.on('subsystem', (accept, reject, info) => start({ kind: 'subsystem', name: info.name }, accept, reject));
  }

  private forwardRefused: { kind: 'x11' } | null = null;
  private agentRequested = false;

  /** The policy's verdict on opening this channel (null: no rule could apply, or not a policy target here). */
  private verdictOn(req: ChannelRequest, git: boolean): Verdict | null {
    const policy = this.ctx.policy;
    if (req.kind === 'exec' && !git) return policy.appliesTo('exec') ? decide(policy, { kind: 'exec', command: req.command }) : null;
    if (req.kind === 'shell') return policy.appliesTo('shell') ? decide(policy, { kind: 'shell' }) : null;
    return null;
  }

  /** How the file trackers (SFTP, scp) ask the policy about a change and answer the client themselves. */
  private filePolicy(client: ServerChannel): FilePolicy {
    const policy = this.ctx.policy;
    return {
      decide: (ops, path, toPath) => (policy.appliesTo('files') ? decideFile(policy, ops, path, toPath) : null),
      unreadable: (why) => {
        if (!policy.appliesTo('files')) return null;
        // The version in force, as any decision names it (SessionPolicy has no getter of its own).
        const { policyVersion } = policy.decide({ kind: 'file', op: 'write', path: '/' });
        return { decision: 'deny', rule: null, reason: `${why}; refused because file rules apply to this session`, policyVersion };
      },
      toClient: (bytes) => { if (client.writable) client.write(bytes); },
    };
  }

  /**
   * Holds an action for approval in place: the client is told on stderr and waits; closing the
   * channel withdraws the request. The verdict it runs or is refused under, and what to record.
   */
  private async waitForApproval(client: ServerChannel, verdict: Verdict, action: PolicyAction, what: string): Promise<{ verdict: Verdict; held: HeldRecord }> {
    const hold = this.ctx.holds.hold(verdict, action, { ch: this.number });
    if (client.writable) client.stderr.write(`${shownToClient(holdNotice(what, hold, verdict))}\r\n`);
    const withdraw = () => hold.withdraw('the client closed the channel');
    client.once('close', withdraw);
    const outcome = await hold.outcome;
    client.off('close', withdraw);
    return { verdict: verdictAfterHold(verdict, hold, outcome, what), held: { request: hold.id, outcome: outcome.kind } };
  }

  /**
   * A submitted line's event: its text and verdict, or, for a line typed after a password prompt
   * (see TerminalRecorder), the same with the text hidden wherever it appears (a policy reason quotes it).
   */
  private lineRecord(line: SubmittedLine, verdict: Verdict, held?: HeldRecord | null): Record<string, unknown> {
    const data = { ch: this.number, ...lineText(line), ...policyField(verdict), ...(held ? { held } : {}) };
    if (!this.terminal?.hidingInput || !line.text) return data;
    const quoted = JSON.stringify(line.text).slice(1, -1);
    return { ...(JSON.parse(JSON.stringify(data).split(quoted).join('[hidden input]')) as Record<string, unknown>), text: '[hidden input]', hiddenInput: true };
  }

  /** Decides each line submitted in a terminal (shell or pty exec); audited lines are recorded here, refusals by terminalInput. */
  private lineGate(): TerminalLineGate {
    const { policy, rec } = this.ctx;
    return new TerminalLineGate((line) => {
      if (!policy.appliesTo('exec')) return null;
      const verdict = decide(policy, lineAction(line));
      if (verdict.decision === 'audit') rec.append('ssh.line', this.lineRecord(line, verdict));
      return verdict;
    });
  }

  /**
   * Terminal input on its way to the target: each Enter whose line the policy refuses is replaced
   * by CANCEL_LINE, one it holds waits (with everything after it) until people decide; what is
   * forwarded is recorded first, as every terminal input is.
   */
  private terminalInput(client: ServerChannel, gate: TerminalLineGate, t: TerminalRecorder, chunk: Buffer): HookResult {
    let stop = gate.scan(chunk);
    if (!stop) return t.input(chunk);
    const out: Buffer[] = [];
    let from = 0;
    const deliver = (): Buffer | Promise<Buffer> => {
      const forwarded = out.length === 1 ? out[0]! : Buffer.concat(out);
      const recorded = forwarded.length > 0 ? t.input(forwarded) : undefined;
      return recorded ? recorded.then(() => forwarded) : forwarded;
    };
    /** The line ending at `at` goes (its Enter is forwarded) or is refused (its Enter replaced); scanning goes on after it. */
    const settle = (at: number, line: SubmittedLine, verdict: Verdict, held: HeldRecord | null): void => {
      if (refuses(verdict)) {
        this.ctx.rec.append('ssh.line.denied', this.lineRecord(line, verdict, held));
        if (client.writable) client.stderr.write(`\r\ngatehouse: ${shownToClient(verdict.reason)}\r\n`);
        out.push(CANCEL_LINE);
      } else {
        this.ctx.rec.append('ssh.line', this.lineRecord(line, verdict, held));
        out.push(chunk.subarray(at, at + 1));
      }
      from = at + 1;
      stop = gate.scan(chunk, from);
    };
    const step = (): Buffer | Promise<Buffer> => {
      while (stop) {
        const s: NonNullable<typeof stop> = stop;
        out.push(chunk.subarray(from, s.at));
        if (s.verdict.decision === 'hold') {
          // What precedes the held Enter waits with it; the rest of the chunk once people decide.
          return this.waitForApproval(client, s.verdict, lineAction(s.line), 'command').then(({ verdict, held }) => {
            settle(s.at, s.line, verdict, held);
            return step();
          });
        }
        settle(s.at, s.line, s.verdict, null);
      }
      out.push(chunk.subarray(from));
      return deliver();
    };
    return step();
  }

  private async run(req: ChannelRequest, client: ServerChannel): Promise<void> {
    const { rec, target } = this.ctx;
    // X11 would open the client's display to the target: never relayed.
    if (this.forwardRefused) rec.append('ssh.forward', { ch: this.number, kind: 'x11', allowed: false, reason: 'not supported by this gateway' });
    // Agent forwarding lets the target use the client's keys: only where the connection allows it.
    const agent = this.agentRequested && this.ctx.agent !== null;
    if (this.agentRequested) {
      rec.append('ssh.forward', { ch: this.number, kind: 'agent', allowed: agent, ...(agent ? {} : { reason: 'not allowed on this connection' }) });
      if (agent) this.ctx.agent!.requested = true;
    }
    // A Git-only connection passes GIT_PROTOCOL alone: other GIT_* variables (GIT_CONFIG_PARAMETERS…) reconfigure git.
    const allowEnv = this.ctx.gitOnly ? ['GIT_PROTOCOL'] : this.ctx.allowEnv;
    for (const name of Object.keys(this.env)) {
      if (!allowEnv.some((g) => matchesGlob(name, g))) {
        rec.append('ssh.env.refused', { ch: this.number, name });
        delete this.env[name];
      }
    }
    const pty = this.pty ? { term: this.pty.term, cols: this.pty.cols, rows: this.pty.rows } : null;
    const exec = req.kind === 'exec' ? recogniseExec(req.command) : null;
    const git = exec?.kind === 'git' ? exec : null;
    const refusal = connectionRefusal(req, exec, this.ctx.gitOnly, this.ctx.git.protect);
    if (refusal) {
      rec.append('ssh.channel.refused', { ch: this.number, request: req.kind, ...(req.kind === 'exec' ? { command: req.command } : req.kind === 'subsystem' ? { name: req.name } : {}), message: refusal });
      return refuseChannel(client, refusal);
    }
    // A Git-only connection runs the service as stock git asks for it, without the client's
    // wrappers and git options (`-c uploadpack.packObjectsHook=…` would run any command).
    const asked = req.kind === 'exec' ? req.command : null;
    if (git && this.ctx.gitOnly) req = { kind: 'exec', command: canonicalGitCommand(git.service, git.repoPath) };
    const requested = req.kind === 'exec' && asked !== null && req.command !== asked ? { requested: asked } : {};
    // The policy decides on the exec's command line and on opening a shell (Git service requests
    // are decided on their ref updates instead). One event holds the request and its verdict.
    let verdict = this.verdictOn(req, git !== null);
    let held: HeldRecord | null = null;
    if (verdict?.decision === 'hold') {
      // Waits in place: the client's channel is open and paused until people decide.
      const action: PolicyAction = req.kind === 'exec' ? { kind: 'exec', command: req.command } : { kind: 'shell' };
      ({ verdict, held } = await this.waitForApproval(client, verdict, action, req.kind === 'exec' ? 'command' : 'shell'));
    }
    const heldField = held ? { held } : {};
    const description = req.kind === 'shell' ? { type: 'ssh.shell', data: { ch: this.number, pty, env: this.env, ...policyField(verdict), ...heldField } }
      : req.kind === 'exec' ? { type: git ? 'git.command' : 'ssh.exec', data: { ch: this.number, command: req.command, ...requested, pty, env: this.env,
        ...(git ? { service: git.service, repo: git.repoPath, ...(git.via.length ? { via: git.via } : {}) } : {}), ...(exec?.kind === 'sftp' ? { protocol: 'sftp' } : {}), ...policyField(verdict), ...heldField } }
      : { type: 'ssh.subsystem', data: { ch: this.number, name: req.name } };
    if (verdict && refuses(verdict)) {
      // Refused whether or not its record can be written: a deny is never weakened by the store.
      try {
        await rec.beforeForward(description.type, description.data);
      } catch (err) {
        this.ctx.log.warn({ err: (err as Error).message, session: rec.id, ch: this.number }, 'could not record a denied request durably; refused all the same');
      }
      // The reason quotes the client's command: control characters in it are shown, not sent to its terminal.
      return refuseChannel(client, shownToClient(verdict.reason));
    }
    // Record before forward: the target learns of the command only once it is on record.
    try {
      await rec.beforeForward(description.type, description.data);
    } catch (err) {
      const message = err instanceof RecordingUnavailableError ? 'the gateway cannot record right now; nothing was sent to the target' : (err as Error).message;
      // Kept with the unwritten request and committed once the store recovers: the record says it never ran.
      rec.append('ssh.channel.refused', { ch: this.number, message });
      return refuseChannel(client, message);
    }

    let upstream: ClientChannel;
    try {
      upstream = await openUpstream(target, req, this.pty, this.env, agent);
    } catch (err) {
      rec.append('ssh.channel.refused', { ch: this.number, message: (err as Error).message });
      return refuseChannel(client, `the target refused the ${req.kind}: ${(err as Error).message}`);
    }
    this.upstream = upstream;
    const startedAt = Date.now();

    if (git) {
      await relayGitService(client, upstream, { ...this.ctx.git, service: git.service, repoPath: git.repoPath, channel: this.number });
      return;
    }

    let hooks: RelayHooks = {};
    // Input that is on record but never reached the target is recorded as such.
    const undelivered = (c: Buffer, reason: string) => { rec.append('ssh.input.undelivered', { ch: this.number, bytes: c.length, reason }); };
    let finish: (exit: ExitInfo) => void | Promise<void> = () => {};
    const scp = req.kind === 'exec' ? parseScpCommand(req.command) : null;
    if (req.kind === 'shell' || this.pty) {
      this.terminal = new TerminalRecorder(rec, this.number);
      const t = this.terminal;
      const gate = this.lineGate();
      // Mask rules rewrite what the terminal shows (the recorder records what the client got).
      const masking = new ChannelOutputMasking(this.ctx.policy, this.ctx.maskKey);
      const out = masking.stream('stdout', (b) => { t.output(b); if (client.writable) client.write(b); });
      const err = masking.stream('stderr', (b) => { t.stderr(b); if (client.stderr.writable) client.stderr.write(b); });
      hooks = {
        // Input answers what the target printed last: what the masking holds (a prompt without a
        // trailing space, an echo) goes out first, so the client sees it and the recorder has it
        // before the input (its password-prompt check reads it).
        input: (c) => { masking.flush(); return this.terminalInput(client, gate, t, c); },
        output: (c) => { const m = out.transform(c); t.output(m ?? c); return m; },
        stderr: (c) => { const m = err.transform(c); t.stderr(m ?? c); return m; },
        flush: () => masking.flush(),
        undelivered,
      };
      finish = (exit) => { t.flush(); rec.append('ssh.exit', { ch: this.number, ...exit, durationMs: Date.now() - startedAt, ...maskedField(masking) }); };
    } else if ((req.kind === 'subsystem' && req.name === 'sftp') || exec?.kind === 'sftp') {
      // sftp -s /usr/lib/openssh/sftp-server runs the server as an exec: the same protocol, tracked the same way.
      const sftp = new SftpTracker(rec, this.number, undefined, this.filePolicy(client));
      hooks = { input: (c) => sftp.fromClient(c), output: (c) => sftp.fromServer(c), undelivered };
      finish = (exit) => { sftp.close(); rec.append('ssh.exit', { ch: this.number, ...exit, durationMs: Date.now() - startedAt }); };
    } else {
      const stdout = new BoundedCapture(this.ctx.sampleBytes);
      const stderr = new BoundedCapture(this.ctx.sampleBytes);
      const upload = scp?.direction === 'upload';
      // Mask rules rewrite a command's output, never a file transfer's (scp, rsync --server; SFTP and Git have their own paths).
      const masking = req.kind === 'exec' && !scp && !transfersFiles(req.command) ? new ChannelOutputMasking(this.ctx.policy, this.ctx.maskKey) : null;
      const out = masking?.stream('stdout', (b) => { stdout.add(b); if (client.writable) client.write(b); });
      const err = masking?.stream('stderr', (b) => { stderr.add(b); if (client.stderr.writable) client.stderr.write(b); });
      const scpTracker = scp ? new ScpTracker(rec, this.number, scp, upload && !scp.recursive ? isDirectoryOnTarget(target, scp.target) : undefined,
        this.filePolicy(client), upload && !scp.target.startsWith('/') ? loginDirectoryOnTarget(target) : undefined) : null;
      // stdin is recorded like terminal input; an interpreter's (bash < deploy.sh) chunk by chunk, before it is forwarded.
      const interpreter = scp || req.kind !== 'exec' ? null : stdinInterpreter(req.command);
      const stdin = new ExecStdinRecorder(rec, this.number, this.ctx.sampleBytes, interpreter);
      // A shell reading commands on stdin: each chunk is decided like an exec before it is forwarded.
      const policy = this.ctx.policy;
      const script = readsShellCommands(interpreter) ? new StdinScriptGate(
        (text) => (policy.appliesTo('exec') ? decide(policy, { kind: 'exec', command: text, interactive: true }) : null),
        (verdict, text) => { rec.append('ssh.stdin.denied', { ch: this.number, text: text.length > 4096 ? `${text.slice(0, 4096)}…` : text, ...policyField(verdict) }); },
        (verdict, text) => this.waitForApproval(client, verdict, { kind: 'exec', command: text, interactive: true }, 'input').then((r) => r.verdict),
      ) : null;
      hooks = {
        // The scp tracker may take a refused file out of the stream: stdin records what is forwarded.
        // (Output held back is not sent on stdin as it is in a terminal: a pipeline streaming
        // stdin would cut the output's tokens at every chunk.)
        input: (c) => {
          const kept = scpTracker?.fromClient(c);
          const approved = script?.input(c);
          if (approved) return approved.then(() => stdin.input(c)).then(() => c);
          if (kept === undefined) return stdin.input(c);
          const recordStdin = (bytes: Buffer): Buffer | Promise<Buffer> => {
            const held = bytes.length > 0 ? stdin.input(bytes) : undefined;
            return held ? held.then(() => bytes) : bytes;
          };
          return Buffer.isBuffer(kept) ? recordStdin(kept) : kept.then(recordStdin);
        },
        output: (c) => {
          const m = out?.transform(c);
          stdout.add(m ?? c);
          scpTracker?.fromServer(c);
          return m;
        },
        stderr: (c) => { const m = err?.transform(c); stderr.add(m ?? c); return m; },
        ...(masking ? { flush: () => masking.flush() } : {}),
        undelivered,
      };
      finish = async (exit) => {
        await scpTracker?.close();
        // scp's stdout and stdin are file content, already recorded as file operations: keep their size and hash only.
        const output = stdout.result();
        const input = stdin.result();
        rec.append('ssh.exit', { ch: this.number, ...exit, durationMs: Date.now() - startedAt, stdinBytes: input.bytes,
          stdin: scpTracker ? { bytes: input.bytes, sha256: input.sha256 } : input,
          stdout: scpTracker ? { bytes: output.bytes, sha256: output.sha256 } : output, stderr: stderr.result(), ...(masking ? maskedField(masking) : {}) });
      };
    }
    await relay(client, upstream, hooks, finish, (err) => this.ctx.log.warn({ err: err.message, session: rec.id, ch: this.number },
      err instanceof ChannelAbortError ? 'stream cannot be checked; closing channel' : 'recording failed; closing channel'));
  }
}

function openUpstream(target: import('ssh2').Client, req: ChannelRequest,
  pty: PseudoTtyInfo | null, env: Record<string, string>, agentForward: boolean): Promise<ClientChannel> {
  const window = pty ? { term: pty.term, cols: pty.cols, rows: pty.rows, width: pty.width, height: pty.height, modes: pty.modes } : undefined;
  // ssh2 honours agentForward per channel (its typings only list it for the connection).
  const extra = agentForward ? { agentForward: true } : {};
  return new Promise((resolve, reject) => {
    const done = (err: Error | undefined, ch: ClientChannel) => (err ? reject(err) : resolve(ch));
    if (req.kind === 'shell') target.shell(window ?? false, { env, ...extra }, done);
    else if (req.kind === 'exec') target.exec(req.command, { env, ...(window ? { pty: window } : {}), ...extra }, done);
    else target.subsys(req.name, done);
  });
}

/** Relays one channel until both sides are done, then hands on the exit status. */
function relay(client: ServerChannel, upstream: ClientChannel, hooks: RelayHooks, finish: (exit: ExitInfo) => void | Promise<void>, onHookError: (err: Error) => void): Promise<void> {
  return new Promise((resolve) => {
    const failHook = (err: Error) => {
      onHookError(err);
      if (client.writable) {
        const why = err instanceof RecordingUnavailableError ? 'the gateway cannot record right now'
          : err instanceof ChannelAbortError ? err.message : 'recording failed';
        client.stderr.write(`\r\ngatehouse: ${why}; closing this channel\r\n`);
        client.exit(255);
        client.end();
      }
      upstream.close();
      // A refused chunk from the target left its side paused: drain it (discarded), or its close never comes.
      upstream.resume();
    };
    const input = pump(client, upstream, hooks.input, failHook, hooks.undelivered);
    pump(upstream, client, hooks.output, failHook);
    pump(upstream.stderr as import('node:stream').Readable, client.stderr as import('node:stream').Writable, hooks.stderr, failHook);
    // Output held back by a transforming hook goes out when the target's stream ends, and before the exit status.
    if (hooks.flush) {
      const flush = hooks.flush;
      upstream.once('end', () => flush());
      (upstream.stderr as import('node:stream').Readable).once('end', () => flush());
    }
    // EOF and close reach the target only after the input held for its record: never before it.
    client.on('end', () => void input.idle().then(() => upstream.end()));
    // The exit is handed on (and recorded) once held input was delivered or recorded as undelivered.
    void watchExit(upstream).then(async (exit) => {
      await input.idle();
      hooks.flush?.();
      endWithExit(client, exit);
      return finish(exit);
    }).finally(resolve);
    client.on('close', () => {
      // The client went away first: close the target's side too (its exit is recorded as unknown).
      void input.idle().then(() => upstream.close());
    });
  });
}

/**
 * Asks the target whether an scp upload's destination is a directory (the file then lands inside
 * it): the gateway runs `test -d` over its own connection. null when it cannot tell.
 */
function isDirectoryOnTarget(target: import('ssh2').Client, dir: string): Promise<boolean | null> {
  return new Promise((resolve) => {
    target.exec(`test -d '${dir.replaceAll("'", "'\\''")}'`, (err, ch) => {
      if (err) return resolve(null);
      let code: number | null = null;
      ch.on('exit', (c: number | null) => { code = c; });
      ch.on('close', () => resolve(code === 0 ? true : code === 1 ? false : null));
      ch.resume();
      ch.stderr.resume();
    });
  });
}

/**
 * The directory commands start in on the target (the login user's home, where scp resolves a
 * relative destination): the gateway runs `pwd` over its own connection. null when it cannot tell.
 */
function loginDirectoryOnTarget(target: import('ssh2').Client): Promise<string | null> {
  return new Promise((resolve) => {
    target.exec('pwd', (err, ch) => {
      if (err) return resolve(null);
      let out = '';
      let code: number | null = null;
      ch.on('data', (c: Buffer) => { if (out.length < 4096) out += c.toString('utf8'); });
      ch.on('exit', (c: number | null) => { code = c; });
      ch.on('close', () => {
        const dir = out.replace(/\n$/, '');
        resolve(code === 0 && dir.startsWith('/') && !dir.includes('\n') ? dir : null);
      });
      ch.stderr.resume();
    });
  });
}

/**
 * Why the connection's policy refuses this request, or null. A Git-only connection runs nothing
 * but a recognised Git service request. Where refs are protected, a command that names
 * receive-pack yet is no plain service request (`nice git-receive-pack …`, `git-receive-pack r; …`)
 * could push past the guard: refused too (a best effort: with a shell allowed, protection is advisory).
 */
function connectionRefusal(req: ChannelRequest, exec: ExecRequest | null, gitOnly: boolean, protect: string[]): string | null {
  if (gitOnly) {
    if (exec?.kind === 'git') return null;
    const what = req.kind === 'shell' ? 'a shell' : req.kind === 'subsystem' ? `the ${req.name} subsystem` : exec?.kind === 'sftp' ? 'SFTP' : 'this command';
    return `this connection is Git-only: ${what} is refused; only git-upload-pack, git-receive-pack and git-upload-archive on one repository may run`;
  }
  if (protect.length > 0 && exec?.kind === 'exec' && exec.mentionsReceivePack) {
    return `this command names receive-pack but is not a plain Git service request the gateway can check (${exec.shellSyntax ?? 'an unrecognised wrapper'}), and this connection protects refs; push with git-receive-pack '<repository>'`;
  }
  return null;
}

/** The exit event's note of what the client's masking masked, by stream, rule and detector (never the value). */
function maskedField(masking: ChannelOutputMasking): { masked?: ReturnType<ChannelOutputMasking['notes']> } {
  const notes = masking.notes();
  return notes.length > 0 ? { masked: notes } : {};
}

/** Ends a channel with a message the client prints, and a failing exit status. */
export function refuseChannel(client: ServerChannel, message: string): void {
  client.stderr.write(`gatehouse: ${message}\r\n`);
  client.exit(1);
  client.end();
}

/** What the policy is asked about a submitted terminal line. */
function lineAction(line: SubmittedLine): PolicyAction {
  return line.text === null ? { kind: 'exec-opaque', what: `the line cannot be read completely (${line.why}); type it again without history, completion or cursor keys` }
    : { kind: 'exec', command: line.text, interactive: true };
}

/** A submitted line as events carry it: its text, or why it could not be read. */
function lineText(line: SubmittedLine): { text: string } | { unreadable: string } {
  if (line.text === null) return { unreadable: line.why ?? 'unknown' };
  return { text: line.text.length > 4096 ? `${line.text.slice(0, 4096)}…` : line.text };
}
