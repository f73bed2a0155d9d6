// Mask rules in the policy file, without sockets: what the file accepts and refuses (with the line
// and why), which rules a session's plan holds and how columns and detectors are chosen, mask
// rules deciding nothing, and the COPY reading and row rewriting used by result masking.
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicyFile, PolicyFileError } from '../../src/policy/policy-file.ts';
import { CompiledPolicy } from '../../src/policy/policy.ts';
import { ValueMasking } from '../../src/policy/mask-detectors.ts';
import { loadPolicyParser } from '../../src/policy/sql-facts.ts';
import { maskBinaryCopy, maskCsvRow, maskTextRow, readCopyStatement } from '../../src/engines/postgres/masking/copy-format.ts';
import type { PolicyPlace, PolicySubject } from '../../src/policy/types.ts';

const POLICY = `
rules:
  - name: dba-may
    when: { groups: [dba] }
    action: allow
  - name: pii-for-agents
    when: { kinds: [agent] }
    action: mask
    mask:
      columns: ["public.users.email", "*.ssn", "*.password*"]
      detectors: [aws, github]
      style: redact
  - name: cards
    when: { connections: [prod-*] }
    action: mask
    mask: { columns: [card_number, "billing.cards.*"], detectors: [credit_card, aws], style: partial }
  - name: no-drops
    sql: { commands: ["DROP *"] }
    action: deny
`;

const agent: PolicySubject = { identity: 'bot', kind: 'agent', groups: [] };
const human: PolicySubject = { identity: 'alice', kind: 'human', groups: ['dba'] };
const prod: PolicyPlace = { connection: 'prod-db', type: 'postgres' };
const dev: PolicyPlace = { connection: 'dev-db', type: 'postgres' };

function refused(text: string): PolicyFileError {
  try {
    parsePolicyFile(text);
  } catch (err) {
    assert.ok(err instanceof PolicyFileError, String(err));
    return err;
  }
  assert.fail('the file was accepted');
}

describe('mask rules in the policy file', () => {
  before(() => loadPolicyParser());

  it('are read with their scope, columns, detectors and style (default redact)', () => {
    const doc = parsePolicyFile(POLICY);
    assert.deepEqual(doc.rules[1], {
      name: 'pii-for-agents', when: { kinds: ['agent'] }, action: 'mask',
      mask: { style: 'redact', columns: ['public.users.email', '*.ssn', '*.password*'], detectors: ['aws', 'github'] },
    });
    assert.equal(parsePolicyFile('rules:\n  - name: m\n    action: mask\n    mask: { detectors: [jwt] }\n').rules[0]!.mask!.style, 'redact');
  });

  it('are refused with the line and the reason when malformed', () => {
    const cases: Array<[string, number, RegExp]> = [
      ['rules:\n  - name: m\n    action: mask\n', 3, /action: mask needs mask:/],
      ['rules:\n  - name: m\n    action: mask\n    mask: { style: redact }\n', 4, /mask needs columns:, detectors: or patterns:/],
      ['rules:\n  - name: m\n    action: mask\n    mask:\n      detectors: [aws, nosuch]\n', 5, /unknown detector "nosuch" \(aws, github/],
      ['rules:\n  - name: m\n    action: mask\n    mask: { columns: [a.b], style: scramble }\n', 4, /style must be one of redact, partial, hash, null/],
      ['rules:\n  - name: m\n    action: mask\n    mask: { columns: ["a..b"] }\n', 4, /column "a..b" has an empty part/],
      ['rules:\n  - name: m\n    action: mask\n    mask: { columns: ["a.b.c.d"] }\n', 4, /more than three parts/],
      ['rules:\n  - name: m\n    action: mask\n    sql: { commands: [SELECT] }\n    mask: { columns: [x] }\n', 4, /sql does not apply to action: mask/],
      ['rules:\n  - name: m\n    action: deny\n    mask: { columns: [x] }\n', 4, /mask: belongs to a rule with action: mask/],
      ['rules:\n  - name: m\n    action: mask\n    mask: { columns: [x], colour: red }\n', 4, /unknown key "colour"/],
      ['rules:\n  - name: m\n    action: maks\n', 3, /action must be one of allow, deny, hold, audit, mask/],
    ];
    for (const [text, line, why] of cases) {
      const err = refused(text);
      assert.equal(err.line, line, `${err.message}\n${text}`);
      assert.match(err.message, why);
    }
  });
});

describe('operator-defined patterns', () => {
  before(() => loadPolicyParser());
  const file = (patterns: string) => `rules:\n  - name: m\n    action: mask\n    mask:\n      style: partial\n      patterns:\n${patterns}`;

  it('are detectors of their own, in their rule\'s style', () => {
    const doc = parsePolicyFile(file("        - { name: order-token, pattern: 'ord_[0-9a-f]{12}' }\n        - { name: ticket, pattern: 'ticket=([A-Z]{3}-[0-9]{4})', group: 1 }\n"));
    const plan = new CompiledPolicy(doc, 1, 'h').maskingFor(agent, prod)!;
    assert.deepEqual(plan.detectors.map((d) => [d.detector, d.style]), [['order-token', 'partial'], ['ticket', 'partial']]);
    const masking = new ValueMasking(plan, Buffer.alloc(32));
    assert.equal(masking.secrets('see ord_0123456789ab and ticket=ABC-1234.'), 'see ************89ab and ticket=****1234.', 'group 1 only');
    assert.equal(masking.secrets('see ord_0123456789ab and ticket=ABCD-12'), 'see ************89ab and ticket=ABCD-12');
  });

  it('are refused when their shape could backtrack catastrophically, their name is taken, or their flags are unknown', () => {
    const cases: Array<[string, number, RegExp]> = [
      [file("        - { name: slow, pattern: '(a+)+b' }\n"), 7, /pattern "slow": a repeated group holds a quantifier or an alternation/],
      [file("        - { name: aws, pattern: 'x' }\n"), 7, /pattern "aws": .*built-in/],
      [file("        - { name: x, pattern: 'x', flags: g }\n"), 7, /flags may be i, m, s, u/],
      [file("        - { name: x, pattern: 'x' }\n        - { name: x, pattern: 'y' }\n"), 8, /a second pattern named "x"/],
      [file("        - { name: x, pattern: 'x', group: 0 }\n"), 7, /group must be a capture group number/],
    ];
    for (const [text, line, why] of cases) {
      const err = refused(text);
      assert.match(err.message, why, text);
      assert.equal(err.line, line, `${err.message}\n${text}`);
    }
  });
});

describe('the mask plan of a session', () => {
  before(() => loadPolicyParser());
  const policy = new CompiledPolicy(parsePolicyFile(POLICY), 3, 'h');

  it('holds the mask rules in scope, and none when no rule is (the relay stays zero-copy)', () => {
    assert.deepEqual(policy.maskingFor(agent, prod)!.rules, ['pii-for-agents', 'cards']);
    assert.deepEqual(policy.maskingFor(agent, dev)!.rules, ['pii-for-agents']);
    assert.deepEqual(policy.maskingFor(human, prod)!.rules, ['cards'], 'an allow rule does not lift masking: mask rules decide nothing');
    assert.equal(policy.maskingFor(human, dev), null);
  });

  it('names columns by schema.table.column globs, the first matching rule decides the style; expressions by the column part', () => {
    const plan = policy.maskingFor(agent, prod)!;
    assert.deepEqual(plan.column('public', 'users', 'email'), { rule: 'pii-for-agents', style: 'redact' });
    assert.equal(plan.column('crm', 'users', 'email'), null);
    assert.deepEqual(plan.column('hr', 'people', 'SSN'), { rule: 'pii-for-agents', style: 'redact' }, 'case does not matter');
    assert.deepEqual(plan.column('public', 'users', 'password_hash'), { rule: 'pii-for-agents', style: 'redact' });
    assert.deepEqual(plan.column('public', 'orders', 'card_number'), { rule: 'cards', style: 'partial' });
    assert.deepEqual(plan.column('billing', 'cards', 'anything'), { rule: 'cards', style: 'partial' });
    assert.equal(plan.column('public', 'users', 'id'), null);
    assert.deepEqual(plan.outputName('email'), { rule: 'pii-for-agents', style: 'redact' });
    assert.equal(plan.outputName('x'), null);
    assert.deepEqual(plan.detectors.map((d) => [d.detector, d.rule, d.style]), [['aws', 'pii-for-agents', 'redact'], ['github', 'pii-for-agents', 'redact'], ['credit_card', 'cards', 'partial']]);
  });

  it('decides nothing: statements are decided by the other rules only', () => {
    assert.equal(policy.decide(agent, prod, { kind: 'sql', text: 'select email from users' }).decision, 'allow');
    assert.equal(policy.decide(agent, prod, { kind: 'sql', text: 'drop table users' }).rule, 'no-drops');
    const only = new CompiledPolicy(parsePolicyFile('rules:\n  - name: m\n    action: mask\n    mask: { columns: ["*"] }\n'), 1, 'h');
    assert.equal(only.appliesTo(agent, prod, 'sql'), false, 'a mask rule is not a rule about every action');
    assert.equal(only.decide(agent, prod, { kind: 'exec', command: 'rm -rf /' }).decision, 'allow');
  });

  it('masks values in their style and what detectors find', () => {
    const masking = new ValueMasking(policy.maskingFor(agent, prod)!, Buffer.alloc(32, 7));
    assert.equal(masking.column('alice@example.com', { rule: 'r', style: 'redact' }, 'email'), '[masked:email]');
    assert.equal(masking.column('4111111111111111', { rule: 'r', style: 'partial' }, 'card'), '************1111');
    assert.equal(masking.column('x', { rule: 'r', style: 'null' }, 'card'), null);
    const h1 = masking.column('same', { rule: 'r', style: 'hash' }, 'n');
    assert.equal(h1, masking.column('same', { rule: 'r', style: 'hash' }, 'n'));
    assert.notEqual(h1, masking.column('other', { rule: 'r', style: 'hash' }, 'n'));
    assert.equal(masking.secrets('nothing here'), undefined);
    assert.equal(masking.secrets(`key=${'AKIA' + 'Q3EXAMPLEZ7K2M4P'};`), 'key=[masked:aws];');
  });
});

describe('COPY reading and rewriting', () => {
  before(() => loadPolicyParser());

  it('reads the relation, columns and options of the COPY that runs', () => {
    const c = readCopyStatement(`select 1; copy public.users (email, id) to stdout with (format csv, header, delimiter ';', quote '''')`, 1)!;
    assert.deepEqual(c, { relation: { schema: 'public', name: 'users', columns: ['email', 'id'] }, format: 'csv', delimiter: ';', nullString: '', quote: "'", escape: "'", header: true });
    assert.deepEqual(readCopyStatement('COPY users TO STDOUT WITH CSV HEADER NULL \'x\'', 0)!.nullString, 'x');
    assert.equal(readCopyStatement('copy (select 1) to stdout', 0)!.relation, null);
    assert.equal(readCopyStatement('copy users from stdin', 0), null);
    assert.equal(readCopyStatement('not sql', 0), null);
  });

  it('rewrites text, CSV and binary rows field by field', () => {
    const text = readCopyStatement('copy t to stdout', 0)!;
    const mask = (i: number, v: string) => (i === 1 ? `<${v}>` : i === 2 ? null : undefined);
    assert.equal(maskTextRow('1\ta\\tb\tc\t\\N', text, mask), '1\t<a\\tb>\t\\N\t\\N');
    assert.equal(maskTextRow('1\t\\N\tx', text, mask), '1\t\\N\t\\N', 'NULL stays NULL');
    assert.equal(maskTextRow('1', text, mask), null);
    const csv = readCopyStatement('copy t to stdout (format csv)', 0)!;
    assert.equal(maskCsvRow('1,"a,""b""",c', csv, mask), '1,"<a,""b"">",');
    assert.equal(maskCsvRow('1,,c', csv, mask), '1,,', 'an unquoted empty field is NULL in CSV');
    const tuple = Buffer.concat([Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8), Buffer.from([0, 2, 0, 0, 0, 1, 0x41, 0, 0, 0, 2, 0x42, 0x43])]);
    const masked = maskBinaryCopy(tuple, true, (i) => i === 1) as Buffer;
    assert.deepEqual([...masked.subarray(19)], [0, 2, 0, 0, 0, 1, 0x41, 0xff, 0xff, 0xff, 0xff]);
    assert.equal(maskBinaryCopy(Buffer.from('junk'), true, () => true), 'unreadable');
  });
});

describe('view column origins (pg_rewrite query trees)', () => {
  it('reads the outer target list only: subqueries in the range table or in an expression do not count', async () => {
    const { viewColumnOrigins } = await import('../../src/engines/postgres/upstream/catalog.ts');
    const tree = '({QUERY :commandType 1 :rtable ({RANGETBLENTRY :rtekind 1 :subquery {QUERY :commandType 1 :targetList ({TARGETENTRY :expr {VAR :varno 1} :resno 1 :resname x :ressortgroupref 0 :resorigtbl 999 :resorigcol 9 :resjunk false})}})'
      + ' :targetList ({TARGETENTRY :expr {VAR :varno 1 :varattno 2} :resno 1 :resname contact :ressortgroupref 0 :resorigtbl 16400 :resorigcol 2 :resjunk false}'
      + ' {TARGETENTRY :expr {FUNCEXPR :args ({VAR :varno 1})} :resno 2 :resname s :ressortgroupref 0 :resorigtbl 0 :resorigcol 0 :resjunk false}'
      + ' {TARGETENTRY :expr {SUBLINK :subselect {QUERY :targetList ({TARGETENTRY :resno 1 :resname max :ressortgroupref 0 :resorigtbl 16400 :resorigcol 2 :resjunk false})}} :resno 3 :resname top\\ \\(x\\) :ressortgroupref 0 :resorigtbl 0 :resorigcol 0 :resjunk false}'
      + ' {TARGETENTRY :expr {VAR :varno 1} :resno 4 :resname id :ressortgroupref 0 :resorigtbl 16400 :resorigcol 1 :resjunk false}) :onConflict <>})';
    assert.deepEqual([...viewColumnOrigins(tree)], [[1, [16400, 2]], [4, [16400, 1]]]);
    assert.deepEqual([...viewColumnOrigins('garbage')], []);
  });
});
