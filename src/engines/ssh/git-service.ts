// Git over SSH: an exec channel running git-receive-pack or git-upload-pack on the target
// (recognised in any spelling by exec-command.ts).
// Fetches are relayed as they are and summarised (refs and objects asked for). Pushes go through
// HeldPush (src/engines/git/push-hold.ts, shared with smart HTTP): the commands are recorded
// before anything reaches the target; when a command touches a protected ref, the push is spooled
// to disk until the gateway has decided, and a refused push never reaches the target — the client
// gets the report a Git server would send. See docs/git-push-protection.md.
import type { ClientChannel, ServerChannel } from 'ssh2';
import type ssh2 from 'ssh2';
import type { Logger } from 'pino';
import type { SessionRecording } from '../../recorder/recorder.ts';
import { AdvertisementReader, type RefAdvertisement } from '../git/refs.ts';
import { ReportStatusReader } from '../git/receive-pack.ts';
import { UploadPackRequestReader } from '../git/upload-pack.ts';
import { HeldPush } from '../git/push-hold.ts';
import type { SessionHolds } from '../../approvals/session-holds.ts';
import { shownToClient } from './policy-verdict.ts';
import type { RefPolicy } from '../git/push-guard.ts';
import { defaultPushLimits, type PushLimits } from '../git/push-limits.ts';
import { probeOverStream } from '../git/target-probe.ts';
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
  /** How much a guarded push may hold (defaults: 2 GiB, spooled under the system's temp directory). */
  limits?: PushLimits;
  /** The session's policy, for rules on ref updates. */
  policy?: RefPolicy | null;
  /** Where a push a rule holds waits for approval. */
  holds?: SessionHolds | null;
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

  // Client → target: through the held push (src/engines/git/push-hold.ts), which decides.
  const push = new HeldPush({
    protect: opts.protect, policy: opts.policy, limits: opts.limits ?? defaultPushLimits(), rec, recordBase: { ch: opts.channel, repo: opts.repoPath },
    objectFormat: async () => { await advertisementSeen; return (advertisement as RefAdvertisement | null)?.objectFormat ?? 'sha1'; },
    askTarget: (tips, have) => askTargetOverSsh(opts, tips, have),
    holds: opts.holds ? { hold: (verdict, action) => opts.holds!.hold(verdict, action, { ch: opts.channel }) } : null,
    // git shows the channel's stderr as it comes, while it waits for the report.
    notify: (message) => { if (client.writable) client.stderr.write(`${shownToClient(message)}\n`); },
  });
  client.pipe(push);
  // The target gone before a decision (or the client gone at any point) ends the exchange.
  const gone = new Promise<null>((resolve) => {
    client.on('close', () => { push.abort('the client closed the channel'); upstream.close(); resolve(null); });
    upstream.on('close', () => resolve(null));
  });
  const outcome = await Promise.race([push.outcome, gone]);
  if (outcome === null) return exited;
  if (outcome.kind === 'forward') {
    report = new ReportStatusReader(push.request.capabilities);
    outcome.body.pipe(upstream);
    const exit = await exited;
    if (push.request.phase === 'pack') await push.recordForwarded((report as ReportStatusReader).result, { exit });
    return exit;
  }
  // Refused or failed: the target saw no command. A flush-pkt is what git sends when it has none:
  // receive-pack then exits quietly (a bare EOF makes it print "fatal: the remote end hung up
  // unexpectedly", which would reach the client's stderr).
  upstream.end(FLUSH_PKT);
  if (outcome.kind === 'refuse') client.write(outcome.report);
  else client.stderr.write(`gatehouse: ${outcome.message}\n`);
  // Like git-receive-pack after reporting: exit status 0 (endWithExit sends it, then ends the channel).
  return { code: 0, signal: null };
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
