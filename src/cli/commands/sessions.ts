import type { Command } from 'commander';
import type { ApiClient } from '../api-client.ts';
import { replay, sessionsTable, timeline, type EventView, type SessionView } from '../format.ts';
import { playTerminal } from '../terminal-player.ts';

type ClientFactory = (cmd: Command) => ApiClient;

export function registerSessions(program: Command, client: ClientFactory): Command {
  const sessions = program.command('sessions').description('recorded sessions');
  sessions.command('list').description('list sessions, newest first')
    .option('--identity <name>', 'only this identity')
    .option('--connection <name>', 'only this connection')
    .option('--kind <kind>', 'only identities of this kind: agent, human, service')
    .option('--claim <name=value>', 'only sessions whose identity has this claim value, e.g. repository=org/app (repeatable; all must match)',
      (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--limit <n>', 'at most this many', '50')
    .option('--json', 'machine-readable output')
    .action(async (opts: { identity?: string; connection?: string; kind?: string; claim: string[]; limit: string; json?: boolean }, cmd: Command) => {
      const q = new URLSearchParams({ limit: opts.limit });
      if (opts.identity) q.set('identity', opts.identity);
      if (opts.connection) q.set('connection', opts.connection);
      if (opts.kind) q.set('kind', opts.kind);
      for (const c of opts.claim) {
        if (!/^[^=]+=/.test(c)) throw new Error(`invalid --claim "${c}": use NAME=VALUE, e.g. repository=org/app`);
        q.append('claim', c);
      }
      const rows = await client(cmd).get<SessionView[]>(`/api/v1/sessions?${q}`);
      console.log(opts.json ? JSON.stringify(rows, null, 2) : sessionsTable(rows));
    });
  sessions.command('search <words>').description('sessions whose statements, commands, file paths, refs or result samples hold every word (ended sessions), newest first')
    .option('--identity <name>', 'only this identity')
    .option('--connection <name>', 'only this connection')
    .option('--limit <n>', 'at most this many', '50')
    .option('--json', 'machine-readable output')
    .action(async (words: string, opts: { identity?: string; connection?: string; limit: string; json?: boolean }, cmd: Command) => {
      const q = new URLSearchParams({ q: words, limit: opts.limit });
      if (opts.identity) q.set('identity', opts.identity);
      if (opts.connection) q.set('connection', opts.connection);
      const rows = await client(cmd).get<SessionView[]>(`/api/v1/sessions?${q}`);
      console.log(opts.json ? JSON.stringify(rows, null, 2) : rows.length === 0 ? 'no ended session holds these words' : sessionsTable(rows));
    });
  sessions.command('show <id>').description('the session timeline: statements, outcomes, timings')
    .option('--json', 'the full recording as JSON')
    .action(async (id: string, opts: { json?: boolean }, cmd: Command) => {
      const out = await client(cmd).get<{ session: SessionView; events: EventView[] }>(`/api/v1/sessions/${encodeURIComponent(id)}`);
      console.log(opts.json ? JSON.stringify(out, null, 2) : timeline(out.session, out.events));
    });
  sessions.command('hold <id>').description('place a session under legal hold (retention never removes it)')
    .option('--release', 'lift the hold instead')
    .action(async (id: string, opts: { release?: boolean }, cmd: Command) => {
      await client(cmd).post(`/api/v1/sessions/${encodeURIComponent(id)}/hold`, { hold: !opts.release });
      console.log(opts.release ? `legal hold on ${id} lifted` : `session ${id} is under legal hold`);
    });
  sessions.command('kill <id>').description('end an open session now (administrators); the client is told, the recording says who ended it')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const out = await client(cmd).post<{ reason: string; ended: boolean }>(`/api/v1/sessions/${encodeURIComponent(id)}/kill`, {});
      console.log(out.ended ? `session ${id} ended (${out.reason})` : `session ${id} is being ended (${out.reason})`);
    });
  program.command('retention').description('recording retention').command('run')
    .description('remove expired recordings now (each removal is tombstoned in the seal log)')
    .action(async (_opts: unknown, cmd: Command) => {
      const r = await client(cmd).post<{ removed: number; byConnection: Record<string, number> }>('/api/v1/retention/run', {});
      console.log(`${r.removed} expired session${r.removed === 1 ? '' : 's'} removed${r.removed ? ` (${Object.entries(r.byConnection).map(([c, n]) => `${c}: ${n}`).join(', ')})` : ''}`);
    });
  sessions.command('replay <id>').description('replay the session: SQL as the client saw it; SSH terminals with their timing')
    .option('--speed <n>', 'terminal playback speed factor', '1')
    .option('--no-wait', 'print terminal output at once, without the recorded pauses')
    .option('--max-idle <seconds>', 'shorten pauses longer than this', '5')
    .option('--channel <n>', 'only this terminal channel')
    .action(async (id: string, opts: { speed: string; wait: boolean; maxIdle: string; channel?: string }, cmd: Command) => {
      const out = await client(cmd).get<{ session: SessionView; events: EventView[] }>(`/api/v1/sessions/${encodeURIComponent(id)}`);
      if (out.session.protocol !== 'ssh') {
        console.log(replay(out.session, out.events));
        return;
      }
      const speed = Number(opts.speed);
      if (!(speed > 0)) throw new Error(`invalid --speed "${opts.speed}": a positive number`);
      const played = await playTerminal(out.events.map((e) => ({ ts: e.tsUs, type: e.type, data: e.data })), {
        speed, noWait: !opts.wait, maxIdle: Number(opts.maxIdle) || 5, channel: opts.channel !== undefined ? Number(opts.channel) : undefined,
        write: (t) => process.stdout.write(t), sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      });
      if (played === 0) console.log(timeline(out.session, out.events));
    });
  return sessions;
}
