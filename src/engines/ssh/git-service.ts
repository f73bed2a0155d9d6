// Git over SSH: an exec channel running git-receive-pack or git-upload-pack on the target
// (recognised in any spelling by exec-command.ts).
// Fetches are relayed as they are and summarised (refs and objects asked for). Pushes are read
// as they pass: the commands are recorded before anything reaches the target; when a command
// touches a protected ref, the pack is held until the gateway has decided, and a refused push
// never reaches the target — the client gets the report a Git server would send. See
// docs/git-push-protection.md.
import type { ClientChannel, ServerChannel } from 'ssh2';
import type ssh2 from 'ssh2';
import type { Logger } from 'pino';
import type { SessionRecording } from '../../recorder/recorder.ts';
import { AdvertisementReader, type RefAdvertisement } from '../git/refs.ts';
import { PushRequestReader, ReportStatusReader } from '../git/receive-pack.ts';
import { UploadPackRequestReader } from '../git/upload-pack.ts';
import { decideUpdates, forwardedPushResult, needsPackBeforeForward, PackCopy, refusalReport, refusedPushResult, MAX_GUARDED_PACK_BYTES, type RecordedUpdate } from '../git/push-guard.ts';
import { probeOverStream } from '../git/target-probe.ts';
import type { AskTarget } from '../git/fast-forward.ts';
import { endWithExit, pump, watchExit, type ExitInfo } from './channel-relay.ts';
import { FLUSH_PKT } from '../git/pkt-line.ts';
import type { GitService } from './exec-command.ts';

export type { GitService };

export interface GitServiceOptions {
  rec: SessionRecording;
  protect: string[];
  log: Logger;
  target: ssh2.Client;
  service: GitService;
  repoPath: string;
  channel: number;
}

export async function relayGitService(client: ServerChannel, upstream: ClientChannel, opts: GitServiceOptions): Promise<void> {
  const exit = opts.service === 'git-receive-pack' ? await relayPush(client, upstream, opts) : await relayFetch(client, upstream, opts);
  endWithExit(client, exit);
}

async function relayFetch(client: ServerChannel, upstream: ClientChannel, opts: GitServiceOptions): Promise<ExitInfo> {
  const request = new UploadPackRequestReader();
  let unparsed: string | null = null;
  let bytesToClient = 0;
  const exited = watchExit(upstream);
  pump(client, upstream, (c) => {
    if (unparsed) return;
    try {
      request.push(c);
    } catch (err) {
      unparsed = (err as Error).message;
    }
  }, () => {});
  pump(upstream, client, (c) => { bytesToClient += c.length; }, () => {});
  upstream.stderr.pipe(client.stderr);
  client.on('end', () => upstream.end());
  client.on('close', () => upstream.close());
  const exit = await exited;
  opts.rec.append('git.fetch', { ch: opts.channel, service: opts.service, repo: opts.repoPath, ...request.summary, bytesToClient, exit, ...(unparsed ? { unparsed } : {}) });
  return exit;
}

async function relayPush(client: ServerChannel, upstream: ClientChannel, opts: GitServiceOptions): Promise<ExitInfo> {
  const { rec } = opts;
  const exited = watchExit(upstream);
  upstream.stderr.pipe(client.stderr);
  client.on('close', () => upstream.close());

  // Target → client: the advertisement (kept for the object format and current refs), then the report.
  const advert = new AdvertisementReader();
  let report: ReportStatusReader | null = null;
  let advertisement: RefAdvertisement | null = null;
  let advertised!: () => void;
  const advertisementSeen = new Promise<void>((resolve) => { advertised = resolve; });
  pump(upstream, client, (c) => {
    try {
      if (!advertisement) {
        advert.push(c);
        if (advert.result) {
          advertisement = advert.result;
          advertised();
          const rest = advert.takeRemainder();
          if (rest.length) report?.push(rest);
        }
      } else {
        report?.push(c);
      }
    } catch { /* observation only: bytes pass unchanged */ }
  }, () => {});

  // Client → target: held until the commands are known and decided.
  const request = new PushRequestReader();
  const held: Buffer[] = [];
  const pack = new PackCopy();
  type State = 'commands' | 'guarding' | 'streaming' | 'refused';
  let state = 'commands' as State;
  let clientEnded = false;
  let decided: RecordedUpdate[] | null = null;
  let protocolError: string | null = null;

  const done = new Promise<void>((resolve) => {
    const onCommandsComplete = async () => {
      await advertisementSeen;
      const format = advertisement!.objectFormat;
      const mustGuard = needsPackBeforeForward(request.updates, opts.protect);
      if (!mustGuard) {
        decided = await decideUpdates(request.updates, null, format, opts.protect, undefined, 'pack not inspected before forwarding');
        if (decided.every((u) => u.allowed)) return forward();
        return refuse();
      }
      state = 'guarding';
      pack.limit = MAX_GUARDED_PACK_BYTES;
      client.resume();
      if (!clientEnded) return; // wait for the whole pack
      return guard();
    };
    const guard = async () => {
      const format = advertisement!.objectFormat;
      const ask: AskTarget = (tips, have) => askTargetOverSsh(opts, tips, have);
      decided = await decideUpdates(request.updates, pack.pack(), format, opts.protect, ask, pack.problem);
      if (decided.every((u) => u.allowed)) return forward(true);
      return refuse();
    };
    const forward = async (wholeRequest = false) => {
      try {
        await recordPush('allowed');
      } catch {
        refuseAll('the gateway cannot record right now; nothing was sent to the target');
        return;
      }
      state = 'streaming';
      report = new ReportStatusReader(request.capabilities);
      for (const c of held) upstream.write(c);
      held.length = 0;
      if (wholeRequest || clientEnded) upstream.end();
      client.resume();
    };
    const refuse = async () => {
      state = 'refused';
      pack.countOnly();
      client.resume(); // drain whatever pack the client still sends
      await recordPush('refused').catch(() => {});
      // The target saw nothing. A flush-pkt is what git sends when it has no command: receive-pack
      // then exits quietly (a bare EOF makes it print "fatal: the remote end hung up unexpectedly",
      // which would reach the client's stderr).
      upstream.end(FLUSH_PKT);
      const send = () => {
        client.write(refusalReport(request.capabilities, decided!));
        rec.append('git.push.result', { ch: opts.channel, repo: opts.repoPath, ...refusedPushResult(decided!, pack.bytes) });
        resolve();
      };
      if (clientEnded || !request.expectsPack) send();
      else pendingSend = send;
    };
    let pendingSend: (() => void) | null = null;
    const refuseAll = (message: string) => {
      state = 'refused';
      upstream.end(FLUSH_PKT);
      client.stderr.write(`gatehouse: ${message}\n`);
      resolve();
    };
    const recordPush = (verdict: string) => {
      const data = { ch: opts.channel, repo: opts.repoPath, verdict, updates: decided, pushOptions: request.pushOptions, capabilities: request.capabilities,
        ...(state === 'guarding' ? { packBytes: pack.bytes } : {}), ...(request.pushCert ? { signed: true } : {}), ...(request.shallow.length ? { shallow: request.shallow.length } : {}) };
      return rec.beforeForward('git.push', data) ?? Promise.resolve();
    };

    client.on('data', (chunk: Buffer) => {
      if (state === 'streaming') {
        pack.add(chunk);
        if (!upstream.write(chunk)) {
          client.pause();
          upstream.once('drain', () => client.resume());
        }
        return;
      }
      if (state === 'guarding' || state === 'refused') {
        pack.add(chunk);
        if (state === 'guarding') held.push(chunk);
        return;
      }
      // Still reading commands: hold everything.
      held.push(chunk);
      try {
        request.push(chunk);
      } catch (err) {
        protocolError = (err as Error).message;
        refuseAll(`malformed push request: ${protocolError}`);
        return;
      }
      if (request.phase === 'pack') {
        for (const c of request.takePackBytes()) pack.add(c);
        client.pause();
        onCommandsComplete().catch((err: Error) => refuseAll(`push could not be checked: ${err.message}`));
      }
    });
    client.on('end', () => {
      clientEnded = true;
      if (state === 'streaming') upstream.end();
      else if (state === 'guarding') guard().catch((err: Error) => refuseAll(`push could not be checked: ${err.message}`));
      else if (state === 'refused') pendingSend?.();
      else if (state === 'commands' && request.phase !== 'pack') {
        // The client ended before sending commands (e.g. `git ls-remote`): nothing to guard.
        for (const c of held) upstream.write(c);
        upstream.end();
        resolve();
      }
    });
    // A refused push is answered once the client's pack has ended (pendingSend): the target's
    // receive-pack, which got EOF, may close well before that and must not end the exchange.
    upstream.on('close', () => { if (state !== 'refused') resolve(); });
    client.on('close', () => resolve());
  });
  client.resume();

  await done;
  // Like git-receive-pack after reporting: exit status 0 (endWithExit sends it, then ends the channel).
  if (state === 'refused') return { code: 0, signal: null };
  const exit = await exited;
  if (state === 'streaming' && decided) {
    const format = (advertisement as RefAdvertisement | null)?.objectFormat ?? 'sha1';
    const result = await forwardedPushResult(request.updates, pack, format, decided, (report as ReportStatusReader | null)?.result ?? null);
    rec.append('git.push.result', { ch: opts.channel, repo: opts.repoPath, ...result, exit });
  } else if (protocolError) {
    rec.append('git.push.result', { ch: opts.channel, repo: opts.repoPath, refusedByGateway: true, error: protocolError });
  }
  return exit;
}

/** Opens a second channel to the target's upload-pack to ask about history the push left out. */
function askTargetOverSsh(opts: GitServiceOptions, tips: string[], have: string): Promise<Map<string, string[]> | null> {
  return new Promise((resolve) => {
    opts.target.exec(`git-upload-pack '${opts.repoPath.replaceAll("'", "'\\''")}'`, { env: { GIT_PROTOCOL: 'version=2' } }, (err, channel) => {
      if (err) return resolve(null);
      probeOverStream(channel, tips, have).then((r) => {
        opts.rec.append('git.probe', { ch: opts.channel, repo: opts.repoPath, tips, have, answered: r !== null, commits: r?.size ?? 0 });
        resolve(r);
      }, () => resolve(null));
    });
  });
}
