// A target the gateway logs in to may be hostile (or an impostor on the path): it must not be
// able to freeze the gateway or make it run unbounded work on behalf of one login.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { authRequest, startFakeTarget, type FakeTarget } from '../support/fake-pg-target.ts';

let pg: PgCluster;
let gw: TestGateway;
let fake: FakeTarget;
let token: string;
let hostileToken: string;

before(async () => {
  pg = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'bystander', connection: 'real', cluster: pg });
  fake = await startFakeTarget(async (conn) => {
    conn.send('R', authRequest(10, Buffer.from('SCRAM-SHA-256\0\0')));
    const first = await conn.next(); // SASLInitialResponse: mechanism, length, client-first
    const text = first.body.toString('latin1');
    const nonce = /r=([^,\0]+)/.exec(text)![1];
    // 2^31 − 1 rounds of PBKDF2: minutes of CPU, if the gateway obliged.
    conn.send('R', authRequest(11, Buffer.from(`r=${nonce}hostile,s=${Buffer.from('salt').toString('base64')},i=2147483647`)));
    await conn.next().catch(() => undefined);
  });
  hostileToken = await gw.setupPostgres({ identity: 'victim', connection: 'hostile', cluster: { host: fake.host, port: fake.port } as PgCluster, user: 'scram_user', password: 'secret' });
});

after(async () => {
  await gw?.stop();
  await fake?.close();
  await pg?.stop();
});

const psql = (connection: string, identity: string, password: string, sql: string) =>
  run('psql', [gw.dsn(connection, identity), '-X', '-c', sql], { env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '20' }, timeoutMs: 30_000 });

test('a target asking for 2^31 SCRAM iterations is refused at once, and the gateway keeps serving others', async () => {
  const started = Date.now();
  const [hostile, other] = await Promise.all([psql('hostile', 'victim', hostileToken, 'select 1'), psql('real', 'bystander', token, 'select 42')]);
  assert.notEqual(hostile.code, 0);
  assert.match(hostile.stderr, /could not connect to the target/);
  assert.ok(Date.now() - started < 10_000, `answered in ${Date.now() - started} ms`);
  assert.equal(other.code, 0, other.stderr);
  assert.match(other.stdout, /42/);
  assert.match(gw.logs(), /SCRAM iterations/);
});
