import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PG_BIN, freePort, startPgCluster } from './pg-cluster.ts';
import type { PgCluster } from './pg-cluster.ts';
import { run, waitForPort } from './processes.ts';
import type { RunResult } from './processes.ts';

function psqlAs(pg: PgCluster, user: string, password: string | undefined, query: string, db: string = 'app'): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  if (password !== undefined) env.PGPASSWORD = password;
  return run(
    join(PG_BIN, 'psql'),
    // -w: never prompt for a password (fail instead)
    ['-XAtq', '-w', '-h', pg.host, '-p', String(pg.port), '-U', user, '-d', db, '-c', query],
    { env, timeoutMs: 15_000 },
  );
}

describe('pg-cluster', () => {
  let pg: PgCluster | undefined;
  let startMs: number = 0;

  before(async () => {
    const t0: number = performance.now();
    pg = await startPgCluster({ settings: { log_statement: 'all' } });
    startMs = performance.now() - t0;
  });

  after(async () => {
    await pg?.stop();
  });

  const cluster = (): PgCluster => {
    assert.ok(pg, 'cluster did not start');
    return pg;
  };

  it('starts on a loopback port with its socket in the temp dir', async () => {
    const c: PgCluster = cluster();
    assert.equal(c.host, '127.0.0.1');
    assert.notEqual(c.port, 5432);
    await waitForPort(c.port, c.host, 1000);
    assert.ok(existsSync(join(dirname(c.dataDir), `.s.PGSQL.${c.port}`)));
    assert.equal(await c.sql('SHOW max_connections'), '200');
    assert.equal(await c.sql('SHOW log_statement'), 'all');
    assert.equal(await c.sql('SELECT current_user'), 'postgres');
    console.log(`# cluster start took ${startMs.toFixed(0)} ms`);
  });

  it('sql() throws with stderr on error', async () => {
    await assert.rejects(cluster().sql('SELECT * FROM no_such_table'), /no_such_table/);
  });

  it('stores md5_user as md5 and scram_user as SCRAM', async () => {
    const out: string = await cluster().sql(
      "SELECT rolname || ':' || CASE WHEN rolpassword LIKE 'md5%' THEN 'md5' WHEN rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram' ELSE 'other' END " +
        "FROM pg_authid WHERE rolname IN ('md5_user','scram_user','trust_user') ORDER BY rolname",
    );
    assert.deepEqual(out.split('\n'), ['md5_user:md5', 'scram_user:scram', 'trust_user:other']);
  });

  for (const [user, good, bad] of [
    ['scram_user', 'scram-secret', 'wrong'],
    ['md5_user', 'md5-secret', 'wrong'],
  ] as const) {
    it(`${user} logs in over TCP with its password`, async () => {
      const ok: RunResult = await psqlAs(cluster(), user, good, 'SELECT 1');
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout.trim(), '1');
    });

    it(`${user} is rejected with a wrong or missing password`, async () => {
      const wrong: RunResult = await psqlAs(cluster(), user, bad, 'SELECT 1');
      assert.notEqual(wrong.code, 0);
      assert.match(wrong.stderr, /password authentication failed/);
      const none: RunResult = await psqlAs(cluster(), user, undefined, 'SELECT 1');
      assert.notEqual(none.code, 0);
    });
  }

  it('trust_user logs in with no password and can create tables in app.public', async () => {
    const r: RunResult = await psqlAs(cluster(), 'trust_user', undefined, 'CREATE TABLE t(x int); INSERT INTO t VALUES (1); SELECT x FROM t');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), '1');
  });

  it('unknown roles are rejected over TCP', async () => {
    await cluster().sql('CREATE ROLE other_user LOGIN');
    const r: RunResult = await psqlAs(cluster(), 'other_user', undefined, 'SELECT 1');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /pg_hba\.conf rejects connection/);
  });

  it('writes the server log', () => {
    assert.match(readFileSync(cluster().logFile, 'utf8'), /statement: SELECT 1/);
  });

  it('stop() removes the temp dir and frees the port', async () => {
    const c: PgCluster = await startPgCluster();
    const tmp: string = dirname(c.dataDir);
    try {
      assert.ok(existsSync(c.dataDir));
      await waitForPort(c.port, c.host, 1000);
    } finally {
      await c.stop();
    }
    assert.equal(existsSync(tmp), false);
    await assert.rejects(waitForPort(c.port, c.host, 300));
    await c.stop(); // idempotent
  });
});

describe('processes', () => {
  it('run() collects output, exit code and stdin', async () => {
    const r: RunResult = await run('sh', ['-c', 'cat; echo err >&2; exit 3'], { input: 'hello' });
    assert.deepEqual(r, { code: 3, signal: null, stdout: 'hello', stderr: 'err\n' });
  });

  it('run() rejects on timeout', async () => {
    await assert.rejects(run('sleep', ['10'], { timeoutMs: 100 }), /timed out/);
  });

  it('freePort() returns a bindable port', async () => {
    const p: number = await freePort();
    assert.ok(p > 0 && p < 65536);
  });
});
