// `gatehouse audit`: the admin audit log — every change made through the API, who made it and
// from where, in time order. Its integrity is checked with `gatehouse verify --store`.
import type { Command } from 'commander';
import type { ApiClient } from '../api-client.ts';
import { table, visible } from '../format.ts';
import { parseDuration } from '../../util/duration.ts';

type ClientFactory = (cmd: Command) => ApiClient;

interface Entry { at: string; gateway: string; seq: number; action: string; data: Record<string, unknown> }

export function registerAudit(program: Command, client: ClientFactory): void {
  program.command('audit').description('the admin audit log: every change through the API (identities, tokens, grants, connections, policies…)')
    .option('--since <when>', 'only entries after this: a duration back from now (1h, 7d) or an ISO time')
    .option('--limit <n>', 'at most this many (the newest)', '1000')
    .option('--json', 'machine-readable output')
    .action(async (opts: { since?: string; limit: string; json?: boolean }, cmd: Command) => {
      const params = new URLSearchParams({ limit: String(Number(opts.limit)) });
      if (opts.since) params.set('since', String(sinceMs(opts.since)));
      const entries = await client(cmd).get<Entry[]>(`/api/v1/audit?${params}`);
      if (opts.json) { console.log(JSON.stringify(entries, null, 2)); return; }
      const outcomes = new Map<string, unknown>();
      for (const e of entries) if (e.action === 'outcome') outcomes.set(`${e.gateway}#${String(e.data.ref)}`, e.data.status);
      console.log(table(['TIME', 'ACTOR', 'FROM', 'ACTION', 'STATUS'], entries.filter((e) => e.action !== 'outcome').map((e) => {
        const actor = (e.data.actor ?? {}) as { name?: string; from?: string };
        return [e.at, visible(String(actor.name ?? '')), visible(String(actor.from ?? '')), visible(describe(e)), String(outcomes.get(`${e.gateway}#${e.seq}`) ?? '')];
      })));
    });
}

function describe(e: Entry): string {
  const d = e.data;
  if (e.action === 'request') {
    const params = Object.entries((d.params ?? {}) as Record<string, unknown>).map(([k, v]) => `${k}=${String(v)}`).join(' ');
    return `${String(d.method)} ${String(d.route)}${params ? ` ${params}` : ''}`;
  }
  if (e.action === 'token.issued') return `token issued to ${String((d.identity as { name?: unknown } | undefined)?.name ?? '?')} via ${String(d.route)}`;
  return e.action;
}

function sinceMs(text: string): number {
  if (/^\d+\s*[smhdw]$/.test(text.trim())) return Date.now() - parseDuration(text) * 1000;
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new Error(`invalid --since "${text}": a duration (1h, 7d) or an ISO time`);
  return t;
}
