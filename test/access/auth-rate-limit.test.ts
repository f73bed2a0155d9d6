// Failed sign-ins are limited per source address across every listener: after a flood of wrong
// tokens an address is refused at once, with its protocol's own error (PostgreSQL ErrorResponse,
// HTTP 429 with Retry-After, SSH disconnect), valid tokens included, while another address signs
// in as usual; the refusals stay on record, but a flood writes a bounded number of sessions plus
// summaries with the count. Distinct loopback addresses (127.0.0.x) stand for distinct clients.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { runSsh } from '../support/ssh-client.ts';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, newToken, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { PgWire, PgServerError } from '../support/pg-wire.ts';
import type { SessionView } from '../../src/cli/format.ts';

const MAX_FAILURES = 5;
const RECORDED_PER_WINDOW = 3;
const WINDOW_MS = 3000;

let pg: PgCluster;
let gw: TestGateway;
let token: string;

before(async () => {
  pg = await startPgCluster();
  gw = await startTestGateway({
    env: {
      GATEHOUSE_AUTH_MAX_FAILURES: String(MAX_FAILURES), GATEHOUSE_AUTH_WINDOW_MS: String(WINDOW_MS),
      GATEHOUSE_AUTH_LOCKOUT_MS: '120000', GATEHOUSE_AUTH_EXEMPT_LOOPBACK: '0', GATEHOUSE_AUTH_RECORDED_PER_WINDOW: String(RECORDED_PER_WINDOW),
    },
  });
  token = await gw.setupPostgres({ identity: 'rl', connection: 'app', cluster: pg });
});
after(async () => {
  await gw?.stop();
  await pg?.stop();
});

function cleanEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, PGCONNECT_TIMEOUT: '10', ...extra };
}

function psql(tok: string) {
  return run('psql', [gw.dsn('app', 'rl'), '-X', '-w', '-Atc', 'select 1'], { env: cleanEnv({ PGPASSWORD: tok }), timeoutMs: 30_000 });
}

/** Signs in over the PostgreSQL wire from `from`; resolves with the server's error, or null once in. */
async function pgSignIn(from: string, tok: string): Promise<{ error: PgServerError | null; wire: PgWire }> {
  const wire = await PgWire.connect({ host: gw.pgHost, port: gw.pgPort, localAddress: from });
  try {
    await wire.startup({ user: 'rl', database: 'app' }, tok);
    return { error: null, wire };
  } catch (err) {
    if (err instanceof PgServerError) return { error: err, wire };
    throw err;
  }
}

function httpGet(from: string, path: string, headers: Record<string, string>): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: gw.httpPort, path, headers, localAddress: from, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
}

/** The auditor reads recordings from an address of its own (127.0.0.1 gets locked out below). */
const AUDITOR = '127.0.0.9';
async function api<T>(path: string): Promise<T> {
  const r = await httpGet(AUDITOR, path, { authorization: `Bearer ${gw.adminToken}` });
  assert.equal(r.status, 200, `GET ${path}: ${r.status} ${r.body}`);
  return JSON.parse(r.body) as T;
}
async function sessionIds(): Promise<Set<string>> {
  return new Set((await api<SessionView[]>('/api/v1/sessions?limit=10000')).map((s) => s.id));
}

async function refusedSince(beforeIds: Set<string>): Promise<SessionView[]> {
  return (await api<SessionView[]>('/api/v1/sessions?limit=10000'))
    .filter((s) => !beforeIds.has(s.id) && /^refused: /.test(s.endReason ?? ''));
}

interface Summary { failed: number; rateLimited: number; source: string }
async function summaries(sessions: SessionView[]): Promise<Summary[]> {
  const out: Summary[] = [];
  for (const s of sessions.filter((x) => /not recorded one by one/.test(x.endReason ?? ''))) {
    const rec = await api<{ events: Array<{ type: string; data: Record<string, unknown> }> }>(`/api/v1/sessions/${s.id}`);
    const denied = rec.events.find((e) => e.type === 'access.denied');
    out.push(denied!.data.summary as Summary);
  }
  return out;
}

test('PostgreSQL: a flood of wrong tokens locks the address out, valid token included; another address signs in; refusals recorded in bounded form', { timeout: 120_000 }, async () => {
  const beforeIds = await sessionIds();
  const FLOOD = 30;
  const answers: string[] = [];
  const slowest: number[] = [];
  for (let i = 0; i < FLOOD; i++) {
    const t0 = Date.now();
    const r = await psql(newToken());
    slowest.push(Date.now() - t0);
    assert.notEqual(r.code, 0);
    answers.push(r.stderr);
  }
  const failed = answers.filter((a) => /password authentication failed for user "rl"/.test(a)).length;
  const limited = answers.filter((a) => /too many failed sign-ins from 127\.0\.0\.1: try again in \d+ s/.test(a)).length;
  assert.equal(failed, MAX_FAILURES, `the first ${MAX_FAILURES} wrong tokens are checked and refused:\n${answers.slice(0, 7).join('')}`);
  assert.equal(limited, FLOOD - MAX_FAILURES, `the rest are refused as rate-limited:\n${answers.slice(MAX_FAILURES, MAX_FAILURES + 2).join('')}`);

  // The valid token from the locked-out address: refused as well, without being checked.
  const own = await psql(token);
  assert.notEqual(own.code, 0);
  assert.match(own.stderr, /too many failed sign-ins from 127\.0\.0\.1/);
  const raw = await pgSignIn('127.0.0.1', token);
  assert.equal(raw.error?.fields.code, '28000');
  assert.match(raw.error?.fields.message ?? '', /too many failed sign-ins/);
  raw.wire.socket.destroy();

  // Another address is not affected: it signs in and runs a query, promptly.
  const t0 = Date.now();
  const other = await pgSignIn('127.0.0.2', token);
  assert.equal(other.error, null, `127.0.0.2 signs in: ${other.error?.message}`);
  const q = await other.wire.queryOk('select 41 + 1');
  assert.deepEqual(q.rows, [['42']]);
  assert.ok(Date.now() - t0 < 3000, `the other address was served within 3 s (${Date.now() - t0} ms)`);
  other.wire.socket.destroy();

  // On record: the first RECORDED_PER_WINDOW refusals one by one, the rest counted in summaries.
  const expectedUnrecorded = FLOOD + 2 - RECORDED_PER_WINDOW; // psql flood, then psql and raw with the valid token
  let refused: SessionView[] = [];
  let sums: Summary[] = [];
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    refused = await refusedSince(beforeIds);
    sums = await summaries(refused);
    if (sums.reduce((n, s) => n + s.failed + s.rateLimited, 0) >= expectedUnrecorded) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const individual = refused.filter((s) => !/not recorded one by one/.test(s.endReason ?? ''));
  assert.equal(individual.length, RECORDED_PER_WINDOW, `refusals recorded one by one: ${individual.map((s) => s.endReason).join('; ')}`);
  assert.ok(individual.every((s) => /token unknown/.test(s.endReason ?? '')), individual.map((s) => s.endReason).join('; '));
  assert.ok(sums.length >= 1 && sums.length <= 3, `a few summaries, not one per attempt (${sums.length})`);
  assert.equal(sums.reduce((n, s) => n + s.failed, 0), MAX_FAILURES - RECORDED_PER_WINDOW, 'failed sign-ins counted in summaries');
  assert.equal(sums.reduce((n, s) => n + s.rateLimited, 0), FLOOD - MAX_FAILURES + 2, 'rate-limited attempts counted in summaries');
  assert.ok(sums.every((s) => s.source === '127.0.0.1'));
  console.log(`flood of ${FLOOD} wrong tokens: ${failed} checked, ${limited} rate-limited; ${refused.length} refusal sessions written (${individual.length} individual, ${sums.length} summaries); slowest psql ${Math.max(...slowest)} ms`);
});

test('API bearer tokens: 429 with Retry-After after the limit, valid token included; the count is shared with the PostgreSQL listener', { timeout: 60_000 }, async () => {
  const from = '127.0.0.3';
  for (let i = 0; i < MAX_FAILURES - 2; i++) {
    const r = await httpGet(from, '/api/v1/whoami', { authorization: `Bearer ${newToken()}` });
    assert.equal(r.status, 401);
  }
  // Two more failures, over PostgreSQL: the same address, another listener.
  for (let i = 0; i < 2; i++) {
    const r = await pgSignIn(from, newToken());
    assert.equal(r.error?.fields.code, '28P01');
    r.wire.socket.destroy();
  }
  const locked = await httpGet(from, '/api/v1/whoami', { authorization: `Bearer ${gw.adminToken}` });
  assert.equal(locked.status, 429, locked.body);
  assert.ok(Number(locked.headers['retry-after']) > 0, `Retry-After: ${locked.headers['retry-after']}`);
  assert.match(locked.body, /too many failed sign-ins from 127\.0\.0\.3/);
  const pgLocked = await pgSignIn(from, token);
  assert.match(pgLocked.error?.message ?? '', /too many failed sign-ins/);
  pgLocked.wire.socket.destroy();
  // Health needs no token and stays up; another address is served.
  assert.equal((await httpGet(from, '/api/v1/health', {})).status, 200);
  assert.equal((await httpGet('127.0.0.4', '/api/v1/whoami', { authorization: `Bearer ${gw.adminToken}` })).status, 200);
});

test('Git HTTP basic auth: 429 with Retry-After once the address is locked out', { timeout: 60_000 }, async () => {
  const from = '127.0.0.5';
  const basic = (tok: string) => ({ authorization: `Basic ${Buffer.from(`x:${tok}`).toString('base64')}` });
  const path = '/git/nosuch/repo.git/info/refs?service=git-upload-pack';
  for (let i = 0; i < MAX_FAILURES; i++) assert.equal((await httpGet(from, path, basic(newToken()))).status, 401);
  const r = await httpGet(from, path, basic(token));
  assert.equal(r.status, 429, r.body);
  assert.ok(Number(r.headers['retry-after']) > 0);
  assert.match(r.body, /too many failed sign-ins/);
});

test('SSH tokens: once locked out, the client is disconnected with the reason', { timeout: 90_000 }, async () => {
  const attempt = (password: string) => runSsh({ port: gw.sshPort, user: 'app', password, preferredAuthentications: 'password', logLevel: 'INFO', extra: ['-b', '127.0.0.6'] }, 'true');
  for (let i = 0; i < MAX_FAILURES; i++) {
    const r = await attempt(newToken());
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Permission denied/, r.stderr);
  }
  const t0 = Date.now();
  const r = await attempt(token);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /gatehouse: too many failed sign-ins from 127\.0\.0\.6: try again in \d+ s/, r.stderr);
  assert.ok(Date.now() - t0 < 5000, `refused quickly (${Date.now() - t0} ms)`);
});

test('a concurrent flood of raw wrong-token connections: the gateway keeps answering, and writes a bounded number of refusal sessions', { timeout: 120_000 }, async () => {
  const from = '127.0.0.7';
  const beforeIds = await sessionIds();
  const FLOOD = 400;
  const latencies: number[] = [];
  let flooding = true;
  const probe = (async () => {
    while (flooding) {
      const t0 = Date.now();
      assert.equal((await httpGet(AUDITOR, '/api/v1/health', {})).status, 200);
      latencies.push(Date.now() - t0);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const t0 = Date.now();
  const codes = new Map<string, number>();
  for (let i = 0; i < FLOOD; i += 50) {
    const batch = await Promise.all(Array.from({ length: 50 }, async () => {
      const r = await pgSignIn(from, newToken());
      r.wire.socket.destroy();
      return r.error?.fields.code ?? 'signed in';
    }));
    for (const c of batch) codes.set(c, (codes.get(c) ?? 0) + 1);
  }
  const floodMs = Date.now() - t0;
  flooding = false;
  await probe;
  assert.equal(codes.get('signed in'), undefined);
  assert.ok((codes.get('28P01') ?? 0) <= MAX_FAILURES + 50, `few tokens were checked: ${JSON.stringify([...codes])}`);
  assert.ok((codes.get('28000') ?? 0) >= FLOOD - MAX_FAILURES - 50, `the rest were refused as rate-limited: ${JSON.stringify([...codes])}`);
  assert.ok(Math.max(...latencies) < 2000, `health answered within 2 s throughout (max ${Math.max(...latencies)} ms)`);

  // Wait for the summaries, then count what was written for this address.
  let mine: SessionView[] = [];
  let counted = 0;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    mine = (await refusedSince(beforeIds)).filter((s) => s.clientAddr.startsWith(from));
    const sums = await summaries(mine);
    counted = mine.length - sums.length + sums.reduce((n, s) => n + s.failed + s.rateLimited, 0);
    if (counted >= FLOOD) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(counted, FLOOD, 'every attempt is accounted for, one by one or in a summary');
  assert.ok(mine.length <= RECORDED_PER_WINDOW + 8, `refusal sessions written stay bounded: ${mine.length} for ${FLOOD} attempts`);
  console.log(`concurrent flood: ${FLOOD} attempts in ${floodMs} ms (${JSON.stringify(Object.fromEntries(codes))}); ${mine.length} refusal sessions written; health max ${Math.max(...latencies)} ms`);
});
