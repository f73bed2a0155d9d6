// `gatehouse policy apply / show / versions / test` against a real gateway: a good file becomes a
// new version; a bad one is refused with its line and reason and changes nothing; only
// administrators may read or change the policy; `policy test` decides without running anything.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let gw: TestGateway;
let dir: string;

const GOOD = `# our first policy
rules:
  - name: no-drops-for-agents
    when: { kinds: [agent], connections: [prod-*] }
    sql: { commands: ["DROP *", "TRUNCATE TABLE"] }
    action: deny
  - name: hold-unbounded-writes
    sql: { commands: [DELETE, UPDATE], without_where: true }
    action: hold
    approvers: { groups: [dba] }
  - name: no-rm-rf
    exec: { commands: ["rm -rf *", "shutdown*", "sudo *"] }
    action: deny
  - name: main-needs-review
    git: { refs: [refs/heads/main], force: true }
    action: hold
`;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-policy-cli-'));
  gw = await startTestGateway();
  await gw.cliOk(['identity', 'add', 'bot', '--kind', 'agent']);
  await gw.cliOk(['identity', 'add', 'alice', '--kind', 'human']);
  await gw.cliOk(['connection', 'add', 'prod-db', '--type', 'postgres', '--host', '127.0.0.1', '--port', '5432', '--database', 'app', '--user', 'app', '--sslmode', 'disable']);
});

after(async () => {
  await gw?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function file(name: string, text: string): string {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
}

test('before any apply: no policy, everything a grant admits is allowed', async () => {
  assert.match(await gw.cliOk(['policy', 'show']), /no policy applied/);
  const out = await gw.cliOk(['policy', 'test', '--connection', 'prod-db', '--identity', 'bot', 'DROP TABLE accounts']);
  assert.match(out, /^decision {2}ALLOW \(no policy applied\)/m);
});

test('apply, show, versions; a bad file is refused with line and reason and the running policy is untouched', async () => {
  const applied = await gw.cliOk(['policy', 'apply', file('good.yaml', GOOD)]);
  assert.match(applied, /^policy version 1 in force: 4 rules, sha256 [0-9a-f]{64}$/m);
  const shown = await gw.cliOk(['policy', 'show']);
  assert.match(shown, /^# version 1, 4 rules, sha256 [0-9a-f]{64}, applied by admin at /m);
  assert.ok(shown.includes('# our first policy'), 'the source is shown as applied, comments included');

  const bad = await gw.cli(['policy', 'apply', file('bad.yaml', GOOD.replace('action: hold\n    approvers', 'action: halt\n    approvers'))]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /the policy was not applied: line 9: rule "hold-unbounded-writes": action must be one of allow, deny, hold, audit, mask/);
  const unknownKey = await gw.cli(['policy', 'apply', file('typo.yaml', 'rules:\n  - name: x\n    action: deny\n    sql: { comands: [DROP] }\n')]);
  assert.match(unknownKey.stderr, /line 4: rule "x": unknown key "comands"/);
  const json = JSON.parse(await gw.cliOk(['policy', 'show', '--json'])) as { version: number; inForce: number; source: string };
  assert.equal(json.version, 1);
  assert.equal(json.inForce, 1);
  assert.equal(json.source, GOOD);

  await gw.cliOk(['policy', 'apply', file('good.yaml', GOOD)]);
  const versions = JSON.parse(await gw.cliOk(['policy', 'versions', '--json'])) as Array<{ version: number; hash: string; appliedBy: string }>;
  assert.deepEqual(versions.map((v) => v.version), [2, 1], 'every apply is a new version');
  assert.equal(versions[0]!.hash, versions[1]!.hash, 'the same rules hash the same');
});

test('policy test decides as the engines will, with the rule, the version and the parsed form', async () => {
  const drop = await gw.cliOk(['policy', 'test', '--connection', 'prod-db', '--identity', 'bot', '/* x */ select 1; DrOp TaBlE "accounts"']);
  assert.match(drop, /^decision {2}DENY \(rule no-drops-for-agents, policy version 2\)/m);
  assert.match(drop, /^reason {4}the statement DROP TABLE is denied by rule "no-drops-for-agents"/m);
  assert.match(drop, /^parsed {4}.*"DROP TABLE"/m);
  const human = await gw.cliOk(['policy', 'test', '--connection', 'prod-db', '--identity', 'alice', 'drop table accounts']);
  assert.match(human, /^decision {2}ALLOW \(no rule applies; policy version 2\)/m);
  const held = JSON.parse(await gw.cliOk(['policy', 'test', '--connection', 'prod-db', '--identity', 'alice', '--json', 'delete from accounts'])) as { verdict: { decision: string; hold: { approvers: { groups: string[] } } } };
  assert.equal(held.verdict.decision, 'hold');
  assert.deepEqual(held.verdict.hold.approvers.groups, ['dba']);
  const cmd = await gw.cliOk(['policy', 'test', '--connection', 'prod-db', '--identity', 'alice', '--json', '--ref', 'main:force', '--ref', 'feature:force']);
  const refs = (JSON.parse(cmd) as { verdict: { decision: string; refs: Array<{ ref: string; decision: string }> } }).verdict;
  assert.equal(refs.decision, 'hold');
  assert.deepEqual(refs.refs.map((r) => `${r.ref}=${r.decision}`), ['refs/heads/main=hold', 'refs/heads/feature=allow']);
  const unknown = await gw.cli(['policy', 'test', '--connection', 'nope', '--identity', 'bot', 'select 1']);
  assert.match(unknown.stderr, /connection "nope" does not exist/);
});

test('connection --protect is a rule of the policy: shown with it, decided first, named in the verdict', async () => {
  await gw.cliOk(['connection', 'add', 'forge', '--type', 'git-http', '--host', '127.0.0.1', '--port', '1', '--protect', 'main', '--protect', 'release/*']);
  assert.match(await gw.cliOk(['policy', 'show']), /^# connection forge: rule @protected-refs denies deleting and rewriting main, release\/\* \(connection --protect\), before the rules below$/m);
  const json = JSON.parse(await gw.cliOk(['policy', 'show', '--json'])) as { connectionRules: Array<{ connection: string; rule: { name: string; action: string; git: unknown } }> };
  assert.deepEqual(json.connectionRules, [{ connection: 'forge', rule: { name: '@protected-refs', when: {}, git: { refs: ['main', 'release/*'], force: true, delete: true }, action: 'deny' } }]);
  const decided = async (ref: string) => (JSON.parse(await gw.cliOk(['policy', 'test', '--connection', 'forge', '--identity', 'alice', '--json', '--ref', ref])) as { verdict: { decision: string; rule: string | null; reason: string } }).verdict;
  // Before the file's hold on main rewrites: protection denies, with the words --protect has always used.
  assert.deepEqual(await decided('main:force'), { ...(await decided('main:force')), decision: 'deny', rule: '@protected-refs', reason: 'protected ref: non-fast-forward update refused by gatehouse' });
  assert.equal((await decided('refs/heads/release/2:delete')).reason, 'protected ref: deletion refused by gatehouse');
  assert.equal((await decided('main:fast-forward')).decision, 'allow');
  assert.equal((await decided('feature:force')).decision, 'allow');
  // Another connection is not protected by forge's globs.
  const other = await gw.cliOk(['policy', 'test', '--connection', 'prod-db', '--identity', 'bot', '--json', '--ref', 'release/2:delete']);
  assert.notEqual((JSON.parse(other) as { verdict: { rule: string | null } }).verdict.rule, '@protected-refs');
});

test('only administrators read or change the policy', async () => {
  const token = (await gw.cliOk(['token', 'issue', 'alice', '--ttl', '1h'])).trim().split('\n').pop()!;
  for (const args of [['policy', 'show'], ['policy', 'apply', file('x.yaml', GOOD)], ['policy', 'versions']]) {
    const r = await gw.cli(args, { token });
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, /not an administrator/);
  }
  assert.equal((JSON.parse(await gw.cliOk(['policy', 'show', '--json'])) as { version: number }).version, 2);
});
