// Nothing secret in the store (issue 15 item 4), with real clients: psql and a node-postgres
// client (extended protocol) through the gateway print an AWS key id, set a role's password and
// bind a GitHub token; ssh exec echoes a token and prints one split across two writes; an
// interactive shell in tmux prints a token split across writes and reads a password with echo
// off. Then every file of the gateway's data directory (SQLite database, -wal and -shm included)
// is searched for each secret — raw, hex and base64 — and none is there; the recording says what
// was masked; the store verifies and an exported bundle verifies offline. The clients themselves
// still see the values (no mask rule applies to them: the store is masked for every session).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { run, type RunResult } from '../support/processes.ts';
import { runSsh, sshArgs } from '../support/ssh-client.ts';
import { startTerminal } from '../support/terminal.ts';
import { GATEHOUSE_BIN } from '../support/gateway.ts';
import { clientEnv, eventsOf, newRecordings, oneEvent, recordOne, sessionIds, startSshWorld, type Recording, type SshWorld } from '../ssh/helpers.ts';

let w: SshWorld;
let cluster: PgCluster;
let token: string;
let work: string;

const alnum = (n: number) => {
  const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return [...randomBytes(n)].map((b) => A[b % A.length]).join('');
};
const upper = (n: number) => [...randomBytes(n)].map((b) => 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'[b % 32]).join('');

// Fresh fake secrets on every run: if one is in the store, it came from this test.
const AWS_KEY = `AKIA${upper(16)}`;
const ROLE_PASSWORD = `hunter2-${randomBytes(8).toString('hex')}`;
const BOUND_TOKEN = `ghp_${alnum(36)}`;
const EXEC_TOKEN = `ghp_${alnum(36)}`;
const SPLIT_EXEC = `glpat-${alnum(20)}`;
const SPLIT_TERM = `ghp_${alnum(36)}`;
// Its first word names a program an audit rule flags (see the shell test); the whole is secret.
const TYPED_PASSWORD = `flagged-word ${randomBytes(6).toString('hex')}`;
const CURL_BEARER = `bearer-${randomBytes(10).toString('hex')}`;
/** printf's octal escapes for text: the command line that prints a secret does not hold it. */
const octal = (t: string) => [...t].map((c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`).join('');
const SECRETS: Record<string, string> = { AWS_KEY, ROLE_PASSWORD, BOUND_TOKEN, EXEC_TOKEN, SPLIT_EXEC, SPLIT_TERM, TYPED_PASSWORD, CURL_BEARER };

function ok(r: RunResult): RunResult {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function psql(args: string[]): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return run('psql', [w.gw.dsn('app', 'agent1'), '-X', '-w', ...args], { env: { ...env, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' }, timeoutMs: 30_000 });
}

/** Every file under dir, recursively. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

/** The forms a secret could take in a file: as is, hex, and base64 at each of the three alignments (a middle run). */
function forms(secret: string): Buffer[] {
  const b = Buffer.from(secret);
  const out = [b, Buffer.from(b.toString('hex')), Buffer.from(b.toString('hex').toUpperCase())];
  for (let shift = 0; shift < 3; shift++) {
    const pre = Buffer.alloc(shift, 0x20);
    const enc = Buffer.concat([pre, b]).toString('base64');
    out.push(Buffer.from(enc.slice(4, -4)));
  }
  return out;
}

function findInDataDir(dir: string): string[] {
  const hits: string[] = [];
  const files = filesUnder(dir);
  for (const f of files) {
    const content = readFileSync(f);
    for (const [name, secret] of Object.entries(SECRETS)) {
      for (const form of forms(secret)) if (content.includes(form)) hits.push(`${name} in ${path.relative(dir, f)}`);
    }
  }
  return [...new Set(hits)];
}

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-mask-test-'));
  w = await startSshWorld();
  cluster = await startPgCluster();
  token = await w.gw.setupPostgres({ identity: 'agent1', connection: 'app', cluster });
  await cluster.sql('CREATE ROLE masked_target LOGIN');
  await cluster.sql('ALTER ROLE scram_user CREATEROLE');
});

after(async () => {
  await w?.stop();
  await cluster?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const recordings: Recording[] = [];

function note(rec: Recording, type: string): Array<{ field: string; detector: string; count: number }> {
  return eventsOf(rec, type).flatMap((e) => (e.data.masked as Array<{ field: string; detector: string; count: number }> | undefined) ?? []);
}

test('psql: a key in a result and a role password set by ALTER ROLE run as typed, and are masked in the recording', async () => {
  const { rec, result } = await recordOne(w.gw, async () => {
    const r = ok(await psql(['-At', '-c', `select 'AKIA key: ' || '${AWS_KEY}' as k, '${AWS_KEY}' as k2`, '-c', `ALTER ROLE masked_target PASSWORD '${ROLE_PASSWORD}'`]));
    return r;
  });
  recordings.push(rec);
  assert.match(result.stdout, new RegExp(AWS_KEY), 'the client sees the value (no mask rule applies to it)');
  // The password was set as typed: the role can log in with it, directly.
  assert.equal((await cluster.sql("select rolpassword is not null from pg_authid where rolname = 'masked_target'")).trim(), 't');
  const stmts = eventsOf(rec, 'query').map((e) => String(e.data.text));
  assert.ok(stmts.some((t) => t === "select 'AKIA key: ' || '[masked:aws]' as k, '[masked:aws]' as k2"), stmts.join(' | '));
  assert.ok(stmts.includes("ALTER ROLE masked_target PASSWORD '[masked:sql_password]'"), stmts.join(' | '));
  assert.deepEqual(note(rec, 'query'), [{ field: 'text', detector: 'aws', count: 2 }, { field: 'text', detector: 'sql_password', count: 1 }]);
  const result0 = eventsOf(rec, 'result').find((e) => Array.isArray(e.data.sample));
  assert.deepEqual(result0?.data.sample, [['AKIA key: [masked:aws]', '[masked:aws]']]);
  assert.deepEqual(result0?.data.masked, [{ field: 'sample[*][0]', detector: 'aws', count: 1 }, { field: 'sample[*][1]', detector: 'aws', count: 1 }]);
});

test('extended protocol: a bound parameter holding a token is masked in the execution and its result', async () => {
  const { rec } = await recordOne(w.gw, async () => {
    const client = new pg.Client({ host: w.gw.pgHost, port: w.gw.pgPort, user: 'agent1', database: 'app', password: token, ssl: { rejectUnauthorized: false } });
    await client.connect();
    try {
      const r = await client.query('select $1::text as t, length($1::text) as n', [BOUND_TOKEN]);
      assert.equal(r.rows[0].t, BOUND_TOKEN);
    } finally {
      await client.end();
    }
  });
  recordings.push(rec);
  const exec = oneEvent(rec, 'execute');
  assert.deepEqual(exec.params, ['[masked:github]']);
  assert.deepEqual(exec.masked, [{ field: 'params[0]', detector: 'github', count: 1 }]);
});

test('ssh exec: a token on the command line, in its output, split across two writes, and a curl bearer header', async () => {
  const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts(), `echo ${EXEC_TOKEN}; printf '${octal(SPLIT_EXEC.slice(0, 12))}'; sleep 0.3; printf '${octal(SPLIT_EXEC.slice(12))}\\n'; : curl -H 'Authorization: Bearer ${CURL_BEARER}' https://x`));
  recordings.push(rec);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, `${EXEC_TOKEN}\n${SPLIT_EXEC}\n`, 'the client sees the output as it is');
  const exec = oneEvent(rec, 'ssh.exec');
  assert.match(String(exec.command), /^echo \[masked:github\]; .* 'Authorization: Bearer \[masked:http_auth_header\]' https:\/\/x$/);
  assert.deepEqual(exec.masked, [{ field: 'command', detector: 'github', count: 1 }, { field: 'command', detector: 'http_auth_header', count: 1 }]);
  const exit = oneEvent(rec, 'ssh.exit');
  assert.equal((exit.stdout as { sample: string }).sample, '[masked:github]\n[masked:gitlab]\n');
  assert.deepEqual(exit.masked, [{ field: 'stdout.sample', detector: 'github', count: 1 }, { field: 'stdout.sample', detector: 'gitlab', count: 1 }]);
});

test('interactive shell (tmux): a token printed in two writes is masked whole; a password typed with echo off is recorded as its length', async () => {
  // An exec policy that audits a "program" named like the password: the line gate records the
  // typed line (ssh.line), and must not record the password as its text.
  const policyFile = path.join(work, 'policy.yaml');
  writeFileSync(policyFile, `rules:\n  - name: flag-it\n    exec: { programs: [flagged-word, printf] }\n    action: audit\n`);
  await w.gw.cliOk(['policy', 'apply', policyFile]);
  const beforeIds = await sessionIds(w.gw);
  const opts = w.opts();
  const term = await startTerminal({ command: ['ssh', '-tt', ...sshArgs(opts), `${opts.user}@127.0.0.1`], cols: 120, rows: 30, term: 'xterm-256color', env: clientEnv() });
  try {
    await term.send('echo SHELL-$((40+2))\n');
    await term.waitFor('SHELL-42', 15_000);
    // The token's halves are written 200 ms apart: two writes, two chunks.
    await term.send(`printf '${octal(SPLIT_TERM.slice(0, 20))}'; sleep 0.2; printf '${octal(SPLIT_TERM.slice(20))}\\n'; echo DONE-$((1+1))\n`);
    await term.waitFor('DONE-2', 15_000);
    await term.send("read -s -p 'Password: ' pw; echo; echo LEN-${#pw}\n");
    await term.waitFor('Password: ', 15_000);
    await new Promise((r) => setTimeout(r, 200));
    await term.send(`${TYPED_PASSWORD}\n`);
    await term.waitFor(`LEN-${TYPED_PASSWORD.length}`, 15_000);
    await term.send('exit\n');
    await term.waitExit(15_000);
  } finally {
    await term.kill();
  }
  const recs = await newRecordings(w.gw, beforeIds, 1);
  const rec = recs[0]!;
  recordings.push(rec);
  const out = eventsOf(rec, 'term.out').map((e) => String(e.data.d)).join('');
  const input = eventsOf(rec, 'term.in').map((e) => String(e.data.d)).join('');
  // The typed command line holds printf's escapes, the output the whole token, masked.
  assert.ok(out.includes('[masked:github]\r\nDONE-2'), `output: ${JSON.stringify(out.slice(-600))}`);
  assert.ok(note(rec, 'term.out').some((n) => n.detector === 'github'), 'the output notes the mask');
  assert.match(input, /\[hidden input: \d+ bytes\]/, `input: ${JSON.stringify(input.slice(-300))}`);
  const hidden = eventsOf(rec, 'term.in').reduce((n, e) => n + Number(e.data.hidden ?? 0), 0);
  assert.equal(hidden, TYPED_PASSWORD.length, 'every typed byte of the password is hidden, and only those');
  assert.ok(out.includes(`LEN-${TYPED_PASSWORD.length}`));
  const lines = eventsOf(rec, 'ssh.line').map((e) => e.data);
  assert.ok(lines.some((l) => String(l.text).startsWith('printf ')), `the audited printf line is recorded: ${JSON.stringify(lines)}`);
  assert.ok(lines.some((l) => l.hiddenInput === true && l.text === '[hidden input]'), `the audited password line is recorded hidden: ${JSON.stringify(lines)}`);
});

test('the data directory (SQLite files, WAL included) holds none of the secrets; the store and an exported bundle verify', async () => {
  assert.ok(recordings.length >= 4);
  const running = findInDataDir(w.gw.dataDir);
  assert.deepEqual(running, [], 'while the gateway runs');
  assert.ok(filesUnder(w.gw.dataDir).some((f) => f.endsWith('-wal')), 'the WAL is there and was searched');
  assert.deepEqual(w.gw.logs().split('\n').filter((l) => Object.values(SECRETS).some((s) => l.includes(s))), [], 'nor the gateway log');
  // An exported bundle verifies offline (masked events are what the chain holds).
  const bundle = path.join(work, 'bundle');
  const out = await w.gw.cliOk(['sessions', 'export', recordings[0]!.session.id, '--out', bundle]);
  assert.match(out, /sealed/);
  const verified = await run(process.execPath, [GATEHOUSE_BIN, 'verify', bundle], { timeoutMs: 30_000 });
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  const events = readFileSync(path.join(bundle, 'events.jsonl'), 'utf8');
  assert.ok(!events.includes(AWS_KEY) && !events.includes(ROLE_PASSWORD) && events.includes('[masked:sql_password]'));
  // The whole store verifies (every session's chain, checkpoints and seal), offline.
  const dataDir = w.gw.dataDir;
  const keep = path.join(work, 'data');
  await run('cp', ['-a', dataDir, keep], { timeoutMs: 30_000 });
  await w.gw.stop();
  const store = await run(process.execPath, [GATEHOUSE_BIN, 'verify', '--store', '--data-dir', keep], { timeoutMs: 60_000 });
  assert.equal(store.code, 0, store.stdout + store.stderr);
  assert.deepEqual(findInDataDir(keep), [], 'after the gateway stopped');
});
