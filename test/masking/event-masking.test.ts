// The store's masking of events (before they are hashed into the chain): statement text, SQL
// passwords and secret settings, bound parameters (text and binary), result samples, exec command
// lines, terminal bytes; a note of what was masked, never the value; data without secrets untouched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { maskEventData } from '../../src/masking/event-masking.ts';

const GHP = 'ghp_' + 'Zq8'.repeat(12);
const AKIA = 'AKIA' + 'Q7ZT4MXN2KD5WPLB';

function masked(type: string, data: unknown): Record<string, unknown> {
  const out = maskEventData(type, data) as Record<string, unknown>;
  assert.notEqual(out, data, 'masked into a copy');
  return out;
}

test('SQL: passwords, secret settings and literals matching a detector', () => {
  const cases: Array<[string, string, string]> = [
    ["ALTER ROLE app PASSWORD 'hunter2-Xyz9'", 'hunter2-Xyz9', 'sql_password'],
    ["CREATE USER bob WITH LOGIN ENCRYPTED PASSWORD 'it''s-Secret1'", "it''s-Secret1", 'sql_password'],
    ["ALTER USER bob PASSWORD E'back\\'slash-77'", "back\\'slash-77", 'sql_password'],
    ['CREATE ROLE r PASSWORD $pw$dollar-quoted-55$pw$', 'dollar-quoted-55', 'sql_password'],
    ["CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x', password 'fdw-Pass-123')", 'fdw-Pass-123', 'sql_password'],
    ["SET app.api_token = 'tok-998877'", 'tok-998877', 'sql_secret_setting'],
    ["SET SESSION my.secret TO 'shh-556677'", 'shh-556677', 'sql_secret_setting'],
    ["ALTER SYSTEM SET ssl_passphrase_command = 'echo p4ss'", 'echo p4ss', 'sql_secret_setting'],
    ["select set_config('app.secret_key', 'cfg-secret-1', false)", 'cfg-secret-1', 'sql_secret_setting'],
    [`select '${AKIA}'`, AKIA, 'aws'],
    ["CREATE USER 'u'@'%' IDENTIFIED BY 'mysql-pw-42'", 'mysql-pw-42', 'sql_password'],
  ];
  for (const [text, secret, detector] of cases) {
    const out = masked('query', { text });
    assert.ok(!String(out.text).includes(secret), `${text} → ${String(out.text)}`);
    assert.deepEqual(out.masked, [{ field: 'text', detector, count: 1 }], text);
    assert.ok(!JSON.stringify(out).includes(secret));
  }
  // The statement stays readable around the mask.
  assert.equal(masked('query', { text: "ALTER ROLE app PASSWORD 'hunter2-Xyz9'" }).text, "ALTER ROLE app PASSWORD '[masked:sql_password]'");
  // Not secrets: left as they are, and the very same object comes back.
  for (const text of ['SELECT abalance FROM pgbench_accounts WHERE aid = 4242;', "ALTER ROLE app PASSWORD NULL", "UPDATE t SET status = 'shipped'", "SELECT password_hash IS NULL FROM users", 'ALTER ROLE app PASSWORD $1']) {
    const data = { text };
    assert.equal(maskEventData('query', data), data, text);
  }
});

test('parameters, samples, raw bytes, nested fields; the input is never changed', () => {
  const data = { text: 'select $1, $2', params: [GHP, { binary: Buffer.from(AKIA).toString('hex') }, null], ran: { params: [GHP] } };
  const copy = structuredClone(data);
  const out = masked('execute', data);
  assert.deepEqual(data, copy, 'the engine\'s object is not modified');
  assert.equal((out.params as unknown[])[0], '[masked:github]');
  assert.equal(Buffer.from(((out.params as unknown[])[1] as { binary: string }).binary, 'hex').toString(), '[masked:aws]');
  assert.deepEqual(out.masked, [
    { field: 'params[0]', detector: 'github', count: 1 }, { field: 'params[1].binary', detector: 'aws', count: 1 }, { field: 'ran.params[0]', detector: 'github', count: 1 },
  ]);
  const result = masked('result', { ref: 3, columns: ['id', 'key'], sample: [['1', AKIA], ['2', 'plain'], ['3', `x ${AKIA} y`]] });
  assert.deepEqual(result.sample, [['1', '[masked:aws]'], ['2', 'plain'], ['3', 'x [masked:aws] y']]);
  assert.deepEqual(result.masked, [{ field: 'sample[*][1]', detector: 'aws', count: 2 }]);
  const term = masked('term.in', { ch: 0, d: `echo ${GHP}\ufffd`, b64: Buffer.concat([Buffer.from(`echo ${GHP}`), Buffer.from([0xff])]).toString('base64') });
  assert.ok(!Buffer.from(String(term.b64), 'base64').toString('latin1').includes('ghp_'));
  assert.ok(!String(term.d).includes('ghp_'));
  // An engine's own note (a mask rule's) is kept and extended.
  const noted = masked('result', { sample: [[AKIA]], masked: [{ field: 'sample[*][0]', rule: 'pii', count: 1 }] });
  assert.equal((noted.masked as unknown[]).length, 2);
});

test('exec command lines and terminal text: credentials in options, headers and variables', () => {
  const cases: Array<[string, string[]]> = [
    ["curl -H 'Authorization: Bearer abc.def-123456' https://api.example.com", ['abc.def-123456']],
    ['curl -H "X-Api-Key: key-0987654321" -u admin:pa55word https://x', ['key-0987654321', 'pa55word']],
    ['psql --password=db-Pass-1 -h db', ['db-Pass-1']],
    ['vault login --token s.abcdefgh12345678', ['s.abcdefgh12345678']],
    ['PGPASSWORD=pg-secret-9 psql -h db -c "select 1"', ['pg-secret-9']],
    ['export GITHUB_TOKEN=anything-here-1; git push', ['anything-here-1']],
    ['mysql -u root -pRootPw77 app', ['RootPw77']],
    ["sshpass -p 'ss h pass' ssh host", ['ss h pass']],
    [`echo ${GHP} && aws configure set aws_secret_access_key ${'a/B+'.repeat(10)}`, [GHP, 'a/B+'.repeat(10)]],
  ];
  for (const [command, secrets] of cases) {
    const out = masked('ssh.exec', { ch: 0, command });
    for (const s of secrets) assert.ok(!String(out.command).includes(s), `${command} → ${String(out.command)}`);
  }
  for (const command of ['ls -la /home', 'cd "$PWD" && PWD=/tmp ls', 'git log --oneline -5', 'curl https://example.com/?page=2', 'grep -r password .', 'ssh -o PasswordAuthentication=no host']) {
    const data = { ch: 0, command };
    assert.equal(maskEventData('ssh.exec', data), data, command);
  }
});

test('cost: events without secrets are scanned quickly', () => {
  const events = Array.from({ length: 20_000 }, (_, i) => [
    { text: `SELECT abalance FROM pgbench_accounts WHERE aid = ${i};` },
    { ref: i, durationUs: 120, tag: 'SELECT 1', rows: 1, rowsReturned: 1, columns: ['abalance'], sample: [[String(i * 3)]] },
  ]).flat();
  const t0 = performance.now();
  for (const e of events) maskEventData('query', e);
  const us = ((performance.now() - t0) * 1000) / events.length;
  console.log(`  ${us.toFixed(2)} µs per event without secrets`);
  assert.ok(us < 100, `${us} µs per event`);
});

test('an output sample kept as base64 (not UTF-8) is decoded, masked and encoded again', () => {
  const bytes = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(` key=${AKIA}\n`)]);
  const out = masked('ssh.exit', { ch: 0, code: 0, stdout: { bytes: bytes.length, sha256: 'x', sample: bytes.toString('base64'), encoding: 'base64', truncated: false } });
  const sample = Buffer.from(String((out.stdout as Record<string, unknown>).sample), 'base64');
  assert.ok(!sample.includes(AKIA));
  assert.ok(sample.includes('[masked:aws]'));
  assert.deepEqual(out.masked, [{ field: 'stdout.sample', detector: 'aws', count: 1 }]);
});

test('the fast prefilter lets through everything any record detector finds', async () => {
  const { buildCorpus } = await import('./corpus.ts');
  const { findSecrets } = await import('../../src/masking/detectors.ts');
  const { RECORD_DETECTORS, mayHoldRecordSecrets } = await import('../../src/masking/event-masking.ts');
  const { positives, negatives } = buildCorpus(99);
  const texts = [
    ...positives.map((p) => p.text), ...negatives.map((n) => n.text),
    "alter role x password 'abc12345'", "ALTER SYSTEM SET ssl_passphrase_command = 'echo p4ss'", 'passphrase=abcdefgh', 'mysql -pSecret1 db', 'MARIADB -h x -pSecret1', "identified by 'pw-1234'", 'Cookie: sid=abcdef123',
    'X-Vault-Token: hvs.abcdefgh', 'PGPASSWORD=abcdefgh psql', 'curl --user bob:pw123456 x', "sshpass -p 'a b' ssh", "set my.api_key = 'abcdef'",
    `Authorization: Basic ${Buffer.from('u:p').toString('base64')}`, 'ssn 4111-1111-1111-1111',
  ];
  let found = 0;
  for (const t of texts) {
    if (findSecrets(t, RECORD_DETECTORS).length === 0) continue;
    found++;
    assert.ok(mayHoldRecordSecrets(t), `prefilter misses ${JSON.stringify(t.slice(0, 80))}`);
  }
  assert.ok(found >= positives.length, `${found} texts with findings`);
});

test('context rules: bounded work on hostile input', async () => {
  const { findSecrets } = await import('../../src/masking/detectors.ts');
  const { CONTEXT_DETECTORS } = await import('../../src/masking/context-detectors.ts');
  const MB = 1024 * 1024;
  const hostile: Record<string, string> = {
    'password runs': 'password '.repeat(MB / 9),
    "password ' unterminated": "password '" + 'x'.repeat(MB),
    "E'\\\\ runs": "password E'" + '\\'.repeat(MB),
    "'' runs": "password '" + "''".repeat(MB / 2),
    'dollar quotes': 'password $a$' + '$'.repeat(MB),
    '--password runs': '--password '.repeat(MB / 11),
    'dash runs': '-'.repeat(MB),
    'authorization runs': 'Authorization: '.repeat(MB / 15),
    'set_config runs': "set_config('".repeat(MB / 12),
    'mysql runs': 'mysql '.repeat(MB / 6),
    'TOKEN= runs': 'TOKEN='.repeat(MB / 6),
    'identified by runs': 'identified by '.repeat(MB / 14),
    '-u runs': '-u a:'.repeat(MB / 5),
    'secret name chars': 'a.'.repeat(MB / 2) + 'token',
  };
  for (const [name, text] of Object.entries(hostile)) {
    const t0 = performance.now();
    findSecrets(text, CONTEXT_DETECTORS);
    const ms = performance.now() - t0;
    console.log(`  ${name}: ${(text.length / MB).toFixed(1)} MB in ${ms.toFixed(0)} ms`);
    assert.ok(ms < 3000, `${name} took ${ms} ms`);
  }
});

test('result columns named like secrets have their sample cells masked whole; facts about secrets are kept', () => {
  const data = { ref: 1, columns: ['id', 'email', 'password_hash', 'api_key', 'password_changed_at', 'token_type', 'totp_secret'], sample: [['1', 'a@example.com', '$2b$12$abcdefghijklmnopqrstuv', 'k-1', '2026-01-01', 'bearer', null]] };
  const out = masked('result', data);
  assert.deepEqual(out.sample, [['1', 'a@example.com', '[masked:secret_column]', '[masked:secret_column]', '2026-01-01', 'bearer', null]]);
  assert.deepEqual(out.masked, [{ field: 'sample[*][2]', detector: 'secret_column', count: 1 }, { field: 'sample[*][3]', detector: 'secret_column', count: 1 }]);
  const plain = { ref: 1, columns: ['id', 'name'], sample: [['1', 'x']] };
  assert.equal(maskEventData('result', plain), plain);
});

test('ordinary statements, commands and output are recorded as they are', () => {
  const ordinary = [
    'SELECT abalance FROM pgbench_accounts WHERE aid = 4242;', 'UPDATE pgbench_branches SET bbalance = bbalance + -3018 WHERE bid = 1;',
    'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 49312, -3018, CURRENT_TIMESTAMP);',
    'CREATE TABLE users (id bigserial primary key, email text not null, password_hash text, api_key_id uuid, created_at timestamptz default now())',
    'ALTER TABLE sessions ADD COLUMN token_expires_at timestamptz', 'CREATE INDEX ON tokens (user_id, expires_at)', 'SELECT count(*) FROM tokens WHERE revoked',
    "SELECT * FROM orders WHERE created_at > now() - interval '1 day' ORDER BY id DESC LIMIT 50", 'SET statement_timeout = 5000', "SET search_path TO app, public",
    "SET application_name = 'nightly-job'", 'BEGIN ISOLATION LEVEL SERIALIZABLE', 'select pg_sleep(0.1)', 'COPY items (id, name) FROM STDIN WITH (FORMAT csv)',
    'SELECT id, key, value FROM settings WHERE key = $1', 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO readonly', 'ALTER ROLE app SET work_mem = \'64MB\'',
    'ALTER ROLE app WITH LOGIN PASSWORD NULL', 'DROP TABLE IF EXISTS tmp_import',
    'ls -la /var/log', 'git status --porcelain', 'git log --oneline -20', 'kubectl get pods -n prod -o wide', 'docker ps --format "{{.Names}}"',
    'tail -n 200 /var/log/nginx/access.log', 'grep -rn "password" src/ | head', 'systemctl status postgresql@16-main', 'df -h /', 'curl -s https://api.example.com/health',
    'ssh-keygen -lf ~/.ssh/id_ed25519.pub', 'python3 manage.py migrate --noinput', 'npm test -- --grep token', 'cat /etc/os-release', 'uptime',
    'openssl x509 -in cert.pem -noout -subject -dates', 'psql -h db -U app -d app -c "select 1"', 'aws s3 ls s3://backups/2026-12-04/', 'terraform plan -out plan.tfplan',
    'Total: 1234 rows, 5678 bytes, 0 errors', 'commit 3f786850e387550fdab836ed7e6dc881de23001b', 'Dec  4 18:00:01 host CRON[1234]: (root) CMD (run-parts /etc/cron.hourly)',
    '-rw-r--r-- 1 root root 4096 Dec  4 18:00 auth.log', 'HTTP/1.1 200 OK', 'Content-Type: application/json', '{"id": 42, "status": "ok", "items": [1, 2, 3]}',
    'order 4111111111111112 shipped', 'uuid 123e4567-e89b-12d3-a456-426614174000', 'v2.14.3-rc.1', 'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3',
  ];
  const changed: string[] = [];
  for (const text of ordinary) {
    const data = { text };
    if (maskEventData('query', data) !== data) changed.push(text);
  }
  console.log(`  ordinary texts masked: ${changed.length}/${ordinary.length}${changed.length ? ` (${changed.join(' | ')})` : ''}`);
  assert.deepEqual(changed, []);
});
