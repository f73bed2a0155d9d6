// `gatehouse approvals`: pending requests of actions a policy rule holds, and their decision.
import type { Command } from 'commander';
import type { ApiClient } from '../api-client.ts';
import { lines, table, visible } from '../format.ts';

type ClientFactory = (cmd: Command) => ApiClient;

interface ApprovalOut {
  id: string; status: string; requester: { name: string; kind: string; claims: Record<string, string> | null }; session: string; connection: string;
  rule: string; action: { kind: string; text?: string; command?: string; op?: string; path?: string; updates?: Array<{ ref: string; kind: string }> };
  quorum: number; decisions: Array<{ by: string; decision: string }>; createdAt: string; expiresAt: string; reason: string | null;
}

const enc = encodeURIComponent;

function what(a: ApprovalOut['action']): string {
  switch (a.kind) {
    case 'sql': return a.text ?? '';
    case 'exec': return a.command ?? '';
    case 'file': return `${a.op ?? ''} ${a.path ?? ''}`;
    case 'git': return (a.updates ?? []).map((u) => `${u.kind} ${u.ref}`).join(', ');
    default: return a.kind;
  }
}

const age = (iso: string): string => `${Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))}s`;

export function registerApprovals(program: Command, client: ClientFactory): void {
  const approvals = program.command('approvals').description('actions held by a policy rule, waiting for approval (docs/policy.md)');
  approvals.command('list').description('pending requests you may decide').option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const rows = await client(cmd).get<ApprovalOut[]>('/api/v1/approvals');
      if (opts.json) { console.log(JSON.stringify(rows, null, 2)); return; }
      console.log(table(['ID', 'IDENTITY', 'CONNECTION', 'RULE', 'AGE', 'APPROVALS', 'ACTION'], rows.map((a) => [
        a.id, `${visible(a.requester.name)} (${a.requester.kind})`, visible(a.connection), visible(a.rule), age(a.createdAt),
        `${a.decisions.filter((d) => d.decision === 'approve').length}/${a.quorum}`, visible(what(a.action)).slice(0, 120),
      ])));
    });
  approvals.command('approve <id>').description('approve a held action: it runs in its session').option('--reason <text>', 'why (kept in the recording and the audit log)')
    .action(async (id: string, opts: { reason?: string }, cmd: Command) => {
      const out = await client(cmd).post<ApprovalOut>(`/api/v1/approvals/${enc(id)}/approve`, opts.reason ? { reason: opts.reason } : {});
      console.log(out.status === 'approved' ? `approved ${id}: the action runs now` : `approval recorded for ${id}: ${out.decisions.length}/${out.quorum}, waiting for more`);
    });
  approvals.command('deny <id>').description('deny a held action: the client gets an error').requiredOption('--reason <text>', 'why (shown to the client)')
    .action(async (id: string, opts: { reason: string }, cmd: Command) => {
      await client(cmd).post<ApprovalOut>(`/api/v1/approvals/${enc(id)}/deny`, { reason: opts.reason });
      console.log(lines([`denied ${id}`]));
    });
}
