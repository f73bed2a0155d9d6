// Adversarial SQL against `functions:` deny rules, with a real PostgreSQL and psql through the
// gateway: a function bound to an operator (CREATE OPERATOR … FUNCTION = f, after which `SELECT
// ### x` calls f without naming it), a procedure run with CALL, and a cast made from a function.
// Each case asserts psql's error and looks at the database directly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';

let cluster: PgCluster;
let gw: TestGateway;
let dir: string;
let token: string;

const POLICY = `
rules:
  - name: no-bump
    sql: { functions: [bump, "agent.bump", bump_proc] }
    action: deny
  - name: no-kill
    sql: { functions: [pg_terminate_backend] }
    action: deny
`;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-adv-sql-'));
  cluster = await startPgCluster();
  await cluster.sql(`CREATE TABLE bumps (v int); GRANT ALL ON bumps TO scram_user;
    CREATE SCHEMA agent AUTHORIZATION scram_user;
    CREATE FUNCTION agent.bump(int) RETURNS int LANGUAGE sql AS $$ INSERT INTO public.bumps VALUES ($1) RETURNING v $$;
    CREATE PROCEDURE agent.bump_proc() LANGUAGE sql AS $$ INSERT INTO public.bumps VALUES (99) $$;
    ALTER FUNCTION agent.bump(int) OWNER TO scram_user; ALTER PROCEDURE agent.bump_proc() OWNER TO scram_user;`, 'app');
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'bot', connection: 'app', cluster, kind: 'agent' });
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  await gw.cliOk(['policy', 'apply', file]);
});

after(async () => {
  await gw?.stop();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const psql = (sql: string) => run('psql', [gw.dsn('app', 'bot', 'application_name=psql-adv'), '-XAtq', '-v', 'ON_ERROR_STOP=0', '-c', sql], { env: { ...process.env, PGPASSWORD: token } });
const bumps = async () => Number(await cluster.sql('select count(*) from bumps', 'app'));
const operatorExists = async (name: string) => (await cluster.sql(`select count(*) from pg_operator where oprname = '${name}'`, 'app')) !== '0';

test('CREATE OPERATOR bound to a denied function is refused (42501); the operator does not exist, so nothing can call the function through it', async () => {
  const r = await psql('CREATE OPERATOR agent.### (FUNCTION = agent.bump, RIGHTARG = integer)');
  assert.match(r.stderr, /gatehouse: .*denied by rule "no-bump"/);
  assert.equal(await operatorExists('###'), false);
  const kill = await psql('CREATE OPERATOR agent.#### (FUNCTION = pg_terminate_backend, RIGHTARG = integer)');
  assert.match(kill.stderr, /gatehouse: .*denied by rule "no-kill"/);
  assert.equal(await operatorExists('####'), false);
  // The direct call is refused as before.
  const direct = await psql('SELECT agent.bump(1)');
  assert.match(direct.stderr, /denied by rule "no-bump"/);
  assert.equal(await bumps(), 0);
});

test('CALL of a denied procedure is refused (42501) and it does not run', async () => {
  const r = await psql('CALL agent.bump_proc()');
  assert.match(r.stderr, /gatehouse: .*denied by rule "no-bump"/);
  assert.equal(await bumps(), 0);
});

test('CREATE CAST and CREATE AGGREGATE naming a denied function are refused', async () => {
  const cast = await psql('CREATE CAST (int AS agent.x) WITH FUNCTION agent.bump(int)');
  assert.match(cast.stderr, /denied by rule "no-bump"/);
  const agg = await psql('CREATE AGGREGATE agent.a(int) (SFUNC = agent.bump, STYPE = int)');
  assert.match(agg.stderr, /denied by rule "no-bump"/);
});

test('statements that name no denied function still run', async () => {
  const r = await psql('CREATE OPERATOR agent.@@@ (FUNCTION = int4abs, RIGHTARG = integer); SELECT OPERATOR(agent.@@@) -3;');
  assert.equal(r.stderr, '');
  assert.equal(r.stdout.trim().split('\n').pop(), '3');
});
