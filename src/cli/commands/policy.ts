// The policy (docs/policy.md): apply a file as a new version, show the one in force, list
// versions, and try a statement or command against it without running anything.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { ApiClient } from '../api-client.ts';
import { lines, table, visible } from '../format.ts';

type ClientFactory = (cmd: Command) => ApiClient;

interface PolicyOut { version: number; hash?: string; appliedBy?: string; appliedAt?: string; rules: number; source: string | null; inForce: number; connectionRules: Array<{ connection: string; rule: { name: string; git: { refs: string[] } } }> }
interface Verdict { decision: string; rule: string | null; reason: string; policyVersion: number; hold?: { approvers: { groups: string[]; identities: string[] }; quorum: number; timeoutMs: number }; refs?: Array<{ ref: string; decision: string; rule: string | null; reason: string }> }
interface TestOut { verdict: Verdict; subject: { identity: string; kind: string; groups: string[] }; parsed?: unknown }
interface MaskOut {
  subject: { identity: string; kind: string; groups: string[] };
  policyVersion: number;
  mask: null | {
    rules: string[]; detectors: Array<{ detector: string; rule: string; style: string }>; masked: string | null; changed: boolean;
    column?: { name: string; choice: { rule: string; style: string } | null; masked: string | null };
  };
}

export function registerPolicy(program: Command, client: ClientFactory): void {
  const policy = program.command('policy').description('rules that deny, hold for approval or flag actions before they reach targets (docs/policy.md)');

  policy.command('apply <file>').description('check a policy file and put it in force as a new version (a bad file changes nothing)')
    .action(async (file: string, _opts: unknown, cmd: Command) => {
      const out = await client(cmd).put<{ version: number; hash: string; rules: number }>('/api/v1/policy', { source: readFileSync(file, 'utf8') });
      console.log(`policy version ${out.version} in force: ${out.rules} rule${out.rules === 1 ? '' : 's'}, sha256 ${out.hash}`);
    });

  policy.command('show').description('the policy in force').option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const out = await client(cmd).get<PolicyOut>('/api/v1/policy');
      if (opts.json) { console.log(JSON.stringify(out, null, 2)); return; }
      const own = out.connectionRules.map((c) => `# connection ${visible(c.connection)}: rule ${c.rule.name} denies deleting and rewriting ${c.rule.git.refs.map(visible).join(', ')} (connection --protect), before the rules below`);
      if (out.version === 0) {
        console.log(lines([...own, 'no policy applied: every other action a grant admits is allowed']));
        return;
      }
      console.log(lines([...own, `# version ${out.version}, ${out.rules} rules, sha256 ${out.hash}, applied by ${visible(out.appliedBy ?? '')} at ${out.appliedAt}`, ...(out.source ?? '').replace(/\n$/, '').split('\n').map(visible)]));
    });

  policy.command('versions').description('every applied version, newest first').option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const rows = await client(cmd).get<Array<{ version: number; hash: string; appliedBy: string; appliedAt: string }>>('/api/v1/policy/versions');
      console.log(opts.json ? JSON.stringify(rows, null, 2) : table(['VERSION', 'SHA256', 'APPLIED BY', 'APPLIED AT'], rows.map((r) => [r.version, r.hash.slice(0, 16), r.appliedBy, r.appliedAt])));
    });

  policy.command('test [text]').description('decide on a statement or command (or --shell, --file-op, --ref) without running it; --mask shows what mask rules do to a sample')
    .requiredOption('--connection <name>', 'where it would run')
    .requiredOption('--identity <name>', 'who would run it')
    .option('--shell', 'opening an interactive shell')
    .option('--file-op <op>', 'a file operation: write, create, truncate, remove, rename, mkdir, rmdir, setstat, symlink, link (with --path)')
    .option('--path <path>', 'the file the operation is on')
    .option('--to <path>', 'rename / link target')
    .option('--ref <update>', 'a Git ref update: REF:create, REF:delete, REF:fast-forward or REF:force (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--mask <text>', 'a sample of what could come back: what the mask rules in scope do to it')
    .option('--column <name>', 'with --mask: the sample is a value of this result column (schema.table.column, or an expression\'s output name)')
    .option('--json', 'machine-readable output')
    .action(async (text: string | undefined, opts: { connection: string; identity: string; shell?: boolean; fileOp?: string; path?: string; to?: string; ref: string[]; mask?: string; column?: string; json?: boolean }, cmd: Command) => {
      const body: Record<string, unknown> = { connection: opts.connection, identity: opts.identity };
      if (opts.mask !== undefined) {
        const out = await client(cmd).post<MaskOut>('/api/v1/policy/test', { ...body, mask: opts.mask, ...(opts.column !== undefined ? { column: opts.column } : {}) });
        if (opts.json) { console.log(JSON.stringify(out, null, 2)); return; }
        const who = `who       ${visible(out.subject.identity)} (${visible(out.subject.kind)})${out.subject.groups.length ? `, groups ${out.subject.groups.map(visible).join(', ')}` : ''}`;
        const m = out.mask;
        if (!m) { console.log(lines([`masked    nothing: no mask rule applies here${out.policyVersion ? ` (policy version ${out.policyVersion})` : ' (no policy applied)'}`, who])); return; }
        const rows = [
          `masked    ${m.masked === null ? 'NULL' : visible(m.masked)}${m.changed ? '' : ' (the detectors find nothing)'}`,
          `rules     ${m.rules.map(visible).join(', ')} (policy version ${out.policyVersion})`,
          `detectors ${m.detectors.length ? m.detectors.map((d) => `${d.detector} (${visible(d.rule)}, ${d.style})`).join(', ') : 'none'}`,
        ];
        if (m.column) {
          const c = m.column;
          rows.push(`column    ${visible(c.name)}: ${c.choice ? `masked by rule ${visible(c.choice.rule)} (${c.choice.style}) → ${c.masked === null ? 'NULL' : visible(c.masked)}` : 'no rule masks it'}`);
        }
        rows.push(who);
        console.log(lines(rows));
        return;
      }
      if (opts.shell) body.kind = 'shell';
      else if (opts.fileOp) Object.assign(body, { kind: 'file', op: opts.fileOp, path: opts.path ?? '', ...(opts.to ? { toPath: opts.to } : {}) });
      else if (opts.ref.length > 0) Object.assign(body, { kind: 'git', updates: opts.ref.map(refUpdate) });
      else if (text !== undefined) body.text = text;
      else throw new Error('give the statement or command to decide on (or --shell, --file-op, --ref)');
      const out = await client(cmd).post<TestOut>('/api/v1/policy/test', body);
      if (opts.json) { console.log(JSON.stringify(out, null, 2)); return; }
      const v = out.verdict;
      const rows = [
        `decision  ${v.decision.toUpperCase()}${v.rule ? ` (rule ${visible(v.rule)}, policy version ${v.policyVersion})` : v.policyVersion ? ` (no rule applies; policy version ${v.policyVersion})` : ' (no policy applied)'}`,
        `reason    ${visible(v.reason)}`,
        `who       ${visible(out.subject.identity)} (${visible(out.subject.kind)})${out.subject.groups.length ? `, groups ${out.subject.groups.map(visible).join(', ')}` : ''}`,
      ];
      if (v.hold) rows.push(`approval  quorum ${v.hold.quorum}, timeout ${v.hold.timeoutMs / 1000}s${v.hold.approvers.groups.length || v.hold.approvers.identities.length ? `, approvers ${[...v.hold.approvers.groups.map((g) => `group:${g}`), ...v.hold.approvers.identities].map(visible).join(', ')}` : ', approvers: identities with the approve grant on the connection'}`);
      for (const r of v.refs ?? []) rows.push(`ref       ${visible(r.ref)}: ${r.decision}${r.rule ? ` (${visible(r.rule)})` : ''}`);
      if (out.parsed !== undefined) rows.push(`parsed    ${visible(JSON.stringify(out.parsed))}`);
      console.log(lines(rows));
    });
}

function refUpdate(spec: string): { ref: string; kind: string; fastForward?: boolean } {
  const m = /^(.+):(create|delete|fast-forward|force)$/.exec(spec);
  if (!m) throw new Error(`invalid --ref "${spec}": use REF:create, REF:delete, REF:fast-forward or REF:force`);
  const ref = m[1]!.startsWith('refs/') ? m[1]! : `refs/heads/${m[1]}`;
  if (m[2] === 'create' || m[2] === 'delete') return { ref, kind: m[2] };
  return { ref, kind: 'update', fastForward: m[2] === 'fast-forward' };
}
