// Just-in-time access with a real psql: refused without a grant (the error says how to ask), the
// identity asks with its own token, cannot approve its own request, an approver approves, the
// connect grant works at once and ends by itself, and the session open when it ends is ended
// within seconds; a new connection is refused again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { connectAndLogin } from '../support/pg-wire.ts';

let cluster: PgCluster;
let gw: TestGateway;
const tokens: Record<string, string> = {};

before(async () => {
  cluster = await startPgCluster();
  gw = await startTestGateway();
  tokens.bot = await gw.setupPostgres({ identity: 'bot', connection: 'app', cluster, kind: 'agent', grant: false });
  await gw.cliOk(['identity', 'add', 'dora', '--kind', 'human']);
  await gw.cliOk(['grant', 'dora', 'app', '--action', 'approve']);
  tokens.dora = (await gw.cliOk(['token', 'issue', 'dora', '--ttl', '1h'])).trim().split('\n').pop()!;
});

after(async () => {
  await gw?.stop();
  await cluster?.stop();
});

const psql = (sql: string) => run('psql', [gw.dsn('app', 'bot'), '-XAtc', sql], { env: { ...process.env, PGPASSWORD: tokens.bot } });

test('request, approve, use, expire: the grant ends by itself and so does the session open on it', async () => {
  const refused = await psql('select 1');
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /identity "bot" has no grant on connection "app"/);
  assert.match(refused.stderr, /HINT: {2}ask for it: gatehouse access request app --for 1h --reason/);

  const asked = await gw.cliOk(['access', 'request', 'app', '--for', '8s', '--reason', 'fix ticket 7'], { token: tokens.bot });
  const id = /access request (apr_\S+) for connection app/.exec(asked)?.[1];
  assert.ok(id, asked);
  const own = await gw.cli(['approvals', 'approve', id], { token: tokens.bot });
  assert.match(own.stderr, /no identity may approve or deny its own request/);
  const pending = JSON.parse(await gw.cliOk(['approvals', 'list', '--json'], { token: tokens.dora })) as Array<{ id: string; action: { kind: string; seconds: number; reason: string } }>;
  assert.deepEqual(pending.find((p) => p.id === id)?.action, { kind: 'access', connection: 'app', seconds: 8, reason: 'fix ticket 7' });
  await gw.cliOk(['approvals', 'approve', id, '--reason', 'ok for the ticket'], { token: tokens.dora });

  const ok = await psql('select 40 + 2');
  assert.equal(ok.stdout.trim(), '42', ok.stderr);
  const grants = JSON.parse(await gw.cliOk(['grants', '--json'])) as Array<{ subject: string; connection: string; action: string; expiresAt?: string }>;
  const jit = grants.find((g) => g.subject === 'bot' && g.connection === 'app' && g.action === 'connect');
  assert.ok(jit?.expiresAt, `the grant ends by itself: ${JSON.stringify(grants)}`);

  // A session open when the grant ends is ended within seconds.
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bot', database: 'app', password: tokens.bot });
  assert.deepEqual((await wire.queryOk('select 1')).rows, [['1']]);
  const ends = Date.parse(jit.expiresAt);
  const deadline = ends + 20_000;
  let ended = false;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    const r = await wire.query('select 1', 2000).catch(() => null);
    if (r === null || r.errors.length > 0) { ended = true; break; }
  }
  assert.ok(ended, 'the open session ended after the grant did');
  assert.ok(Date.now() >= ends, 'not before');
  const again = await psql('select 1');
  assert.match(again.stderr, /has no grant on connection "app"/);
  // The approval and the grant are in the admin audit log.
  const audit = JSON.parse(await gw.cliOk(['audit', '--json'])) as Array<{ action: string; data: { route?: string; actor?: { name: string } } }>;
  assert.ok(audit.some((e) => e.data.route === '/api/v1/access/requests' && e.data.actor?.name === 'bot'));
  assert.ok(audit.some((e) => e.data.route === '/api/v1/approvals/:id/approve' && e.data.actor?.name === 'dora'));
});
