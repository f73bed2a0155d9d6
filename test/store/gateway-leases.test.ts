// Several gateways on one PostgreSQL store, through restarts, crashes and stalls (issue 12 item 1).
// Each session is owned by the gateway that records it; a gateway that (re)starts seals only its
// own sessions and those of gateways whose lease expired; a live gateway seals a dead one's
// sessions once its lease expires; a gateway that comes back after its lease expired loses the
// sessions another gateway sealed (they end, its later writes for them are refused) and the
// chains never fork. Real gateways, real psql and OpenSSH clients, one PostgreSQL store.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, GATEHOUSE_BIN, type TestGateway } from '../support/gateway.ts';
import { generateClientKey, startSshd, type ClientKey, type Sshd } from '../support/sshd.ts';
import { sshArgs } from '../support/ssh-client.ts';
import { clientEnv } from '../ssh/helpers.ts';
import { run } from '../support/processes.ts';

/** Short leases so that the tests see them expire: a heartbeat every 300 ms, a lease of 3 s. */
const LEASE_MS = 3000;
const LEASE_ENV = { GATEHOUSE_LEASE_MS: String(LEASE_MS), GATEHOUSE_HEARTBEAT_MS: '300' };

let cluster: PgCluster;
let sshd: Sshd;
let work: string;
let storeUrl: string;
let db: pg.Client;
let key: ClientKey;
let token: string;
const secretKey = randomBytes(32).toString('hex');
const gateways = new Map<string, TestGateway>();
const clients = new Set<ChildProcess>();

const dataDir = (name: string): string => path.join(work, name);
const gatewayIdOf = (name: string): string => readFileSync(path.join(dataDir(name), 'gateway-id'), 'utf8').trim();

async function startGateway(name: string): Promise<TestGateway> {
  const gw = await startTestGateway({ dataDir: dataDir(name), args: ['--store', storeUrl], env: { GATEHOUSE_KEY: secretKey, ...LEASE_ENV } });
  gateways.set(name, gw);
  return gw;
}

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-leases-'));
  [cluster, sshd] = await Promise.all([startPgCluster(), startSshd()]);
  await cluster.sql('CREATE DATABASE gstore');
  storeUrl = `postgres://postgres@${cluster.host}:${cluster.port}/gstore`;
  const a = await startGateway('a');
  await startGateway('b');
  token = await a.setupPostgres({ identity: 'agent', connection: 'app', cluster });
  key = await generateClientKey(work, 'ed25519', 'agent_ed25519');
  await a.cliOk(['key', 'add', 'agent', `${key.privateKeyFile}.pub`]);
  await a.cliOk(['connection', 'add', 'box', '--type', 'ssh', '--host', sshd.host, '--port', String(sshd.port), '--user', sshd.user,
    '--key-file', sshd.clientKeyFile, '--host-key', sshd.hostKeyPublic]);
  await a.cliOk(['grant', 'agent', 'box']);
  db = new pg.Client({ connectionString: storeUrl });
  await db.connect();
});

after(async () => {
  for (const c of clients) c.kill('SIGKILL');
  for (const gw of gateways.values()) {
    if (gw.process.signalCode === null) gw.process.kill('SIGCONT');
    await gw.stop();
  }
  await db?.end();
  await Promise.all([cluster?.stop(), sshd?.stop()]);
  if (work) rmSync(work, { recursive: true, force: true });
});

// ---- clients that keep a session open --------------------------------------------------------

interface Interactive {
  child: ChildProcess;
  /** Sends one line (a statement, a shell command). */
  send(line: string): void;
  /** Resolves once stdout holds `text` (anywhere after what was already consumed). */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  output(): string;
  errors(): string;
  exited: Promise<number | null>;
  close(): Promise<number | null>;
}

function interactive(cmd: string, args: string[], env: NodeJS.ProcessEnv): Interactive {
  const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  clients.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  child.stdin!.on('error', () => {});
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => { clients.delete(child); resolve(code); }));
  return {
    child,
    send: (line) => { child.stdin!.write(line + '\n'); },
    async waitFor(text, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (!out.includes(text)) {
        if (Date.now() > deadline) throw new Error(`${cmd}: "${text}" did not arrive; stdout: ${out}\nstderr: ${err}`);
        if (child.exitCode !== null) throw new Error(`${cmd} exited (${child.exitCode}) before "${text}"; stdout: ${out}\nstderr: ${err}`);
        await sleep(25);
      }
    },
    output: () => out,
    errors: () => err,
    exited,
    close: () => { child.stdin!.end(); return exited; },
  };
}

/** psql reading statements from a stdin the test keeps open: one session for as long as it likes. */
const openPsql = (gw: TestGateway): Interactive =>
  interactive('psql', [gw.dsn('app', 'agent'), '-X', '-q', '-A', '-t', '-f', '-'], { ...process.env, PGPASSWORD: token });

/** A shell over ssh without a pty: every line is recorded (durably) before it reaches the target. */
const openShell = (gw: TestGateway): Interactive =>
  interactive('ssh', [...sshArgs({ port: gw.sshPort, identityFile: key.privateKeyFile }), 'box@127.0.0.1', '--', 'sh'], clientEnv());

// ---- reading the store -----------------------------------------------------------------------

interface StoredSession { id: string; protocol: string; gateway_id: string; ended_at: string | null; end_reason: string | null }

async function openSessionsOf(gatewayId: string): Promise<StoredSession[]> {
  return (await db.query('SELECT * FROM sessions WHERE gateway_id = $1 AND ended_at IS NULL ORDER BY started_at', [gatewayId])).rows as StoredSession[];
}

async function session(id: string): Promise<StoredSession> {
  return (await db.query('SELECT * FROM sessions WHERE id = $1', [id])).rows[0] as StoredSession;
}

async function eventsOf(id: string): Promise<Array<{ seq: number; type: string; data: string }>> {
  return (await db.query('SELECT seq::int, type, data FROM events WHERE session_id = $1 ORDER BY seq', [id])).rows as Array<{ seq: number; type: string; data: string }>;
}

async function sealOf(id: string): Promise<{ gateway_id: string } | undefined> {
  return (await db.query('SELECT gateway_id FROM seals WHERE session_id = $1', [id])).rows[0] as { gateway_id: string } | undefined;
}

/** Waits until `gatewayId` owns `n` open sessions of these protocols; returns them. */
async function waitForOpen(gatewayId: string, protocols: string[]): Promise<StoredSession[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const open = (await openSessionsOf(gatewayId)).filter((s) => protocols.includes(s.protocol));
    if (protocols.every((p) => open.some((s) => s.protocol === p))) return open;
    if (Date.now() > deadline) throw new Error(`gateway ${gatewayId} did not open ${protocols.join(', ')} sessions; it has ${JSON.stringify(open)}`);
    await sleep(50);
  }
}

async function waitUntil(what: string, fn: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** `gatehouse verify --store` over the whole store, trusting every gateway's keys. */
async function verifyStore(): Promise<string> {
  const keyFiles = [...gateways.keys()].flatMap((name) => {
    const dir = path.join(dataDir(name), 'signing');
    return readdirSync(dir).filter((f) => f.endsWith('.pem')).map((f) => path.join(dir, f));
  });
  const r = await run(process.execPath, [GATEHOUSE_BIN, 'verify', '--store', '--store-url', storeUrl, '--data-dir', dataDir('a'),
    '--trusted-key', ...keyFiles], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.stdout;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- the tests -------------------------------------------------------------------------------

test('a gateway restarting on a shared store leaves the other gateway\'s open psql and ssh sessions alone', async () => {
  const a = gateways.get('a')!;
  const psql = openPsql(a);
  psql.send("select 'before-' || 'restart';");
  await psql.waitFor('before-restart');
  const shell = openShell(a);
  shell.send('echo shell-before-$((40 + 2))');
  await shell.waitFor('shell-before-42');
  const open = await waitForOpen(gatewayIdOf('a'), ['postgres', 'ssh']);

  // B restarts, twice: a graceful stop and a crash. Each start seals only B's own leftovers.
  await gateways.get('b')!.stop();
  await startGateway('b');
  await gateways.get('b')!.kill();
  await startGateway('b');
  for (const s of open) assert.equal((await session(s.id)).ended_at, null, `${s.protocol} session ${s.id} of gateway a is still open after b restarted`);

  // A's sessions go on recording durable statements and commands.
  for (let i = 0; i < 3; i++) {
    psql.send(`select 'after-restart-' || ${i};`);
    await psql.waitFor(`after-restart-${i}`);
    shell.send(`echo shell-after-$((${i} + 100))`);
    await shell.waitFor(`shell-after-${100 + i}`);
  }
  assert.equal(psql.errors(), '', 'no statement was refused');
  assert.equal(await psql.close(), 0);
  assert.equal(await shell.close(), 0, shell.errors());

  await waitUntil('both sessions to end', async () => (await Promise.all(open.map((s) => session(s.id)))).every((s) => s.ended_at !== null));
  for (const s of open) {
    const row = await session(s.id);
    assert.doesNotMatch(row.end_reason ?? '', /interrupted/, `${s.protocol} session ended as ${row.end_reason}`);
    assert.equal((await sealOf(s.id))?.gateway_id, gatewayIdOf('a'), 'sealed by the gateway that recorded it');
    const text = (await eventsOf(s.id)).map((e) => e.data).join('\n');
    assert.match(text, s.protocol === 'postgres' ? /after-restart-' \|\| 2/ : /shell-after-\$\(\(2 \+ 100\)\)/);
  }
  assert.match(await verifyStore(), /all intact/);
});

test('a killed gateway\'s open sessions are sealed by a live gateway once its lease expires', async () => {
  const b = gateways.get('b')!;
  const bId = gatewayIdOf('b');
  const psql = openPsql(b);
  psql.send("select 'on-b';");
  await psql.waitFor('on-b');
  const shell = openShell(b);
  shell.send('echo shell-on-b');
  await shell.waitFor('shell-on-b');
  const open = await waitForOpen(bId, ['postgres', 'ssh']);

  await b.kill();
  const killedAt = Date.now();
  psql.child.kill('SIGKILL');
  shell.child.kill('SIGKILL');
  await waitUntil('gateway a to seal b\'s sessions', async () => (await Promise.all(open.map((s) => session(s.id)))).every((s) => s.ended_at !== null), 30_000);
  assert.ok(Date.now() - killedAt >= LEASE_MS - 500, 'not before the lease expired');
  for (const s of open) {
    const row = await session(s.id);
    assert.equal(row.end_reason, `interrupted: gateway ${bId} stopped renewing its lease before the session ended; sealed by gateway ${gatewayIdOf('a')}`);
    assert.equal((await sealOf(s.id))?.gateway_id, gatewayIdOf('a'), 'sealed into the live gateway\'s seal log');
    assert.equal(row.gateway_id, gatewayIdOf('a'));
  }
  // B comes back: nothing of its own is left to seal, and it records again.
  const b2 = await startGateway('b');
  assert.doesNotMatch(b2.logs(), /sealed sessions interrupted/);
  const r = await run('psql', [b2.dsn('app', 'agent'), '-XAtc', "select 'b-is-back'"], { env: { ...process.env, PGPASSWORD: token } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(await verifyStore(), /all intact/);
});

test('a stalled gateway that comes back after its lease expired loses the sessions another sealed: they end, and the chains do not fork', async () => {
  const a = gateways.get('a')!;
  const aId = gatewayIdOf('a');
  const psql = openPsql(a);
  psql.send("select 'before-' || 'stall';");
  await psql.waitFor('before-stall');
  const shell = openShell(a);
  shell.send('echo shell-before-stall');
  await shell.waitFor('shell-before-stall');
  const open = await waitForOpen(aId, ['postgres', 'ssh']);

  // A stops dead (no heartbeat, no writes) while its clients stay connected; B takes over.
  a.process.kill('SIGSTOP');
  try {
    await waitUntil('gateway b to seal a\'s sessions', async () => (await Promise.all(open.map((s) => session(s.id)))).every((s) => s.ended_at !== null), 30_000);
  } finally {
    a.process.kill('SIGCONT');
  }
  for (const s of open) assert.equal((await sealOf(s.id))?.gateway_id, gatewayIdOf('b'));
  const sealedEvents = new Map(await Promise.all(open.map(async (s) => [s.id, (await eventsOf(s.id)).length] as const)));

  // A's clients are told their session is over; whatever they send now never reaches a chain.
  // (psql notices a closed connection only when it next sends: hence a second statement.)
  psql.send("select 'after-' || 'stall';");
  psql.send("select 'after-' || 'stall-2';");
  shell.send('echo shell-after-stall');
  const psqlExit = await Promise.race([psql.exited, sleep(15_000).then(() => 'still running')]);
  assert.ok(psqlExit !== 'still running' && psqlExit !== 0, `psql was disconnected (${psqlExit}): ${psql.errors()}`);
  assert.match(psql.errors(), /recording taken over by gateway|connection to server was lost|could not record this statement/);
  assert.notEqual(await Promise.race([shell.exited, sleep(15_000).then(() => 'still running')]), 'still running', 'ssh was disconnected');
  assert.doesNotMatch(psql.output(), /after-stall/);
  assert.doesNotMatch(shell.output(), /shell-after-stall/);
  for (const s of open) {
    const events = await eventsOf(s.id);
    assert.equal(events.length, sealedEvents.get(s.id), `nothing was appended to ${s.protocol} session ${s.id} after its seal`);
    assert.equal(events.at(-1)!.type, 'session.end');
  }
  // A itself is healthy: new sessions are recorded and sealed as usual.
  const r = await run('psql', [a.dsn('app', 'agent'), '-XAtc', "select 'a-after-stall'"], { env: { ...process.env, PGPASSWORD: token } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /a-after-stall/);
  assert.match(a.logs(), /taken over by gateway/);
  for (const name of [...gateways.keys()]) await gateways.get(name)!.stop();
  const verified = await verifyStore();
  assert.match(verified, /all intact/);
  assert.match(verified, / 0 open\)/);
});
