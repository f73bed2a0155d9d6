// Git over SSH: placeholder relay, replaced by the git protocol stage.
import type { ClientChannel, ServerChannel } from 'ssh2';
import type { Logger } from 'pino';
import type ssh2 from 'ssh2';
import type { SessionRecording } from '../../recorder/recorder.ts';

export interface GitServiceOptions {
  rec: SessionRecording;
  protect: string[];
  log: Logger;
  durable: boolean;
  target: ssh2.Client;
  service: 'git-receive-pack' | 'git-upload-pack' | 'git-upload-archive';
  repoPath: string;
  channel: number;
}

export function parseGitCommand(command: string): { service: GitServiceOptions['service']; repoPath: string } | null {
  const m = /^\s*(git[ -](?:receive-pack|upload-pack|upload-archive))\s+'?([^']*)'?\s*$/.exec(command);
  if (!m) return null;
  return { service: m[1]!.replace(' ', '-') as GitServiceOptions['service'], repoPath: m[2]! };
}

export async function relayGitService(client: ServerChannel, upstream: ClientChannel, _opts: GitServiceOptions): Promise<void> {
  client.pipe(upstream);
  client.resume();
  upstream.pipe(client);
  upstream.stderr.pipe(client.stderr);
  await new Promise<void>((resolve) => upstream.on('close', () => resolve()));
}
