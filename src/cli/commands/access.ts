// Groups, grants and the access check (docs/access.md).
import type { Command } from 'commander';
import { ACCESS_ACTIONS } from '../../store/types.ts';
import { lines, table } from '../format.ts';
import { parseDuration } from '../../util/duration.ts';
import type { ApiClient } from '../api-client.ts';

type ClientFactory = (cmd: Command) => ApiClient;

interface GrantOut { subject: string; subjectType: string; action: string; connection: string; createdAt: string }
interface CheckOut {
  allowed: boolean; reason: string; via?: { grant: string; subject: string; action: string; connection: string };
  groups: Array<{ name: string; source: 'member' | 'external' }>;
}

const enc = encodeURIComponent;

/** "group:ci" names a group; anything else an identity (identity names cannot hold ":"). */
function subjectBody(subject: string): { identity: string } | { group: string } {
  return subject.startsWith('group:') ? { group: subject.slice('group:'.length) } : { identity: subject };
}

function checkAction(action: string): string {
  if (!(ACCESS_ACTIONS as readonly string[]).includes(action)) throw new Error(`invalid --action "${action}": use one of ${ACCESS_ACTIONS.join(', ')}`);
  return action;
}

const onWhat = (connection: string) => (connection === '*' ? 'every connection (*)' : connection);

export function registerAccess(program: Command, client: ClientFactory): void {
  const group = program.command('group').description('groups: grants to a group apply to its members');
  group.command('add <name>').description('create a group')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await client(cmd).post('/api/v1/groups', { name });
      console.log(`group ${name} created`);
    });
  group.command('list').description('list groups and their members').option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const rows = await client(cmd).get<Array<{ name: string; members: string[]; createdAt: string }>>('/api/v1/groups');
      console.log(opts.json ? JSON.stringify(rows, null, 2) : table(['NAME', 'MEMBERS', 'CREATED'], rows.map((g) => [g.name, g.members.join(', ') || '-', g.createdAt])));
    });
  group.command('rm <name>').description('delete a group (its memberships and grants go with it)')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await client(cmd).delete(`/api/v1/groups/${enc(name)}`);
      console.log(`group ${name} deleted`);
    });
  const member = group.command('member').description('explicit group members');
  member.command('add <group> <identity>').description('make an identity a member of a group')
    .action(async (groupName: string, identityName: string, _opts: unknown, cmd: Command) => {
      const out = await client(cmd).post<{ created: boolean }>(`/api/v1/groups/${enc(groupName)}/members`, { identity: identityName });
      console.log(out.created ? `${identityName} added to group ${groupName}` : `${identityName} was already in group ${groupName}`);
    });
  member.command('rm <group> <identity>').description('remove an identity from a group')
    .action(async (groupName: string, identityName: string, _opts: unknown, cmd: Command) => {
      await client(cmd).delete(`/api/v1/groups/${enc(groupName)}/members/${enc(identityName)}`);
      console.log(`${identityName} removed from group ${groupName}`);
    });

  const actionOption = ['--action <action>', `${ACCESS_ACTIONS.join(', ')}`, 'connect'] as const;
  program.command('grant <subject> <connection>')
    .description('allow an identity, or group:NAME, an action on a connection ("*": every connection); default deny')
    .option(...actionOption)
    .action(async (subject: string, connection: string, opts: { action: string }, cmd: Command) => {
      const action = checkAction(opts.action);
      const out = await client(cmd).post<{ created: boolean }>('/api/v1/grants', { ...subjectBody(subject), connection, action });
      const what = action === 'connect' ? `access to ${onWhat(connection)}` : `${action} on ${onWhat(connection)}`;
      console.log(out.created ? `granted ${subject} ${what}` : `${subject} already had ${what}`);
    });
  program.command('revoke <subject> <connection>').description('take a grant away (same arguments as grant)')
    .option(...actionOption)
    .action(async (subject: string, connection: string, opts: { action: string }, cmd: Command) => {
      const action = checkAction(opts.action);
      await client(cmd).delete('/api/v1/grants', { ...subjectBody(subject), connection, action });
      console.log(`revoked ${subject}'s ${action === 'connect' ? 'access to' : `${action} on`} ${onWhat(connection)}`);
    });
  program.command('grants').description('list grants').option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const rows = await client(cmd).get<GrantOut[]>('/api/v1/grants');
      console.log(opts.json ? JSON.stringify(rows, null, 2)
        : table(['SUBJECT', 'TYPE', 'ACTION', 'CONNECTION', 'SINCE'], rows.map((g) => [g.subject, g.subjectType, g.action, g.connection, g.createdAt])));
    });

  const access = program.command('access').description('explain access decisions; ask for just-in-time access');
  access.command('request <connection>').description('ask for a connect grant that ends by itself, once an approver approves it')
    .requiredOption('--for <duration>', 'how long, e.g. 30m, 1h (at most 7d)')
    .requiredOption('--reason <text>', 'why (approvers see it)')
    .action(async (connection: string, opts: { for: string; reason: string }, cmd: Command) => {
      const out = await client(cmd).post<{ id: string }>('/api/v1/access/requests', { connection, seconds: parseDuration(opts.for, 7 * 86_400), reason: opts.reason });
      console.log(`access request ${out.id} for connection ${connection} (${opts.for}) is waiting for an approver: gatehouse approvals approve ${out.id}`);
    });
  access.command('check <identity> <connection>')
    .description('would the gateway allow it, and through which grant? exit status 0 allowed, 1 denied')
    .option(...actionOption)
    .option('--json', 'machine-readable output')
    .action(async (identity: string, connection: string, opts: { action: string; json?: boolean }, cmd: Command) => {
      const q = new URLSearchParams({ identity, connection, action: checkAction(opts.action) });
      const out = await client(cmd).get<CheckOut>(`/api/v1/access/check?${q}`);
      if (opts.json) {
        console.log(JSON.stringify(out, null, 2));
      } else {
        const groups = out.groups.map((g) => `${g.name}${g.source === 'external' ? ' (external)' : ''}`);
        console.log(lines([
          `${out.allowed ? 'allowed' : 'denied'}: ${out.reason}`,
          ...(out.via ? [`via:     ${out.via.subject} has ${out.via.action} on ${out.via.connection} (grant ${out.via.grant})`] : []),
          `groups:  ${groups.length ? groups.join(', ') : '-'}`,
        ]));
      }
      if (!out.allowed) process.exitCode = 1;
    });
}
