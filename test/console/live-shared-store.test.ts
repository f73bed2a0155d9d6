// Live session streams on two gateways sharing one PostgreSQL store: a psql session through
// gateway A is watched through A's API (woken by A's own writes) and through B's (which does not
// record it, and looks at the store every 2 s); both streams carry a statement sent while psql is
// still connected, and both end when it disconnects.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let pg: PgCluster;
let a: TestGateway;
let b: TestGateway;

before(async () => {
  pg = await startPgCluster();
  await pg.sql('CREATE DATABASE livestore');
  const store = `postgres://postgres@${pg.host}:${pg.port}/livestore`;
  const key = randomBytes(32).toString('hex');
  a = await startTestGateway({ args: ['--store', store], env: { GATEHOUSE_KEY: key } });
  b = await startTestGateway({ args: ['--store', store], env: { GATEHOUSE_KEY: key } });
});

after(async () => {
  await a?.stop();
  await b?.stop();
  await pg?.stop();
});

class Stream {
  text = '';
  private done = false;
  constructor(body: ReadableStream<Uint8Array>) {
    const reader = body.getReader();
    void (async () => {
      for (;;) {
        const r = await reader.read().catch(() => ({ done: true, value: undefined }));
        if (r.value) this.text += Buffer.from(r.value).toString();
        if (r.done) { this.done = true; return; }
      }
    })();
  }
  async until(what: string | RegExp, ms = 10_000): Promise<number> {
    const t0 = Date.now();
    const seen = () => (typeof what === 'string' ? this.text.includes(what) : what.test(this.text));
    while (!seen()) {
      if (Date.now() - t0 > ms) throw new Error(`no ${what} in ${ms} ms: ${this.text.slice(-400)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return Date.now() - t0;
  }
  async ended(ms = 10_000): Promise<void> {
    const t0 = Date.now();
    while (!this.done) {
      if (Date.now() - t0 > ms) throw new Error('the stream did not end');
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

test('a session recorded by gateway A streams live through A and through B', async () => {
  const botToken = await a.setupPostgres({ identity: 'bot', connection: 'app', cluster: pg, kind: 'agent' });
  await a.cliOk(['identity', 'add', 'dora', '--kind', 'human']);
  await a.cliOk(['grant', 'dora', 'app', '--action', 'audit']);
  const dora = (await a.cliOk(['token', 'issue', 'dora', '--ttl', '1h'])).trim().split('\n').pop()!;

  const psql = spawn('psql', [a.dsn('app', 'bot', 'application_name=shared-live'), '-X', '-v', 'ON_ERROR_STOP=1'], { env: { ...process.env, PGPASSWORD: botToken } });
  let out = '';
  psql.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  psql.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((r) => psql.on('close', r));
  try {
    psql.stdin.write('SELECT 1;\n');
    let id = '';
    for (let i = 0; i < 100 && !id; i++) {
      const res = await fetch(`${b.url}/api/v1/sessions?open=true`, { headers: { authorization: `Bearer ${dora}` } });
      id = ((await res.json()) as Array<{ id: string; applicationName: string }>).find((s) => s.applicationName === 'shared-live')?.id ?? '';
      if (!id) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(id, 'B lists the session open at A');
    const open = async (gw: TestGateway) => {
      const res = await fetch(`${gw.url}/api/v1/sessions/${id}/stream`, { headers: { authorization: `Bearer ${dora}` } });
      assert.equal(res.status, 200);
      return new Stream(res.body!);
    };
    const [atA, atB] = [await open(a), await open(b)];
    await atA.until('SELECT 1;');
    await atB.until('SELECT 1;');
    psql.stdin.write("SELECT 'shared-live-statement' AS x;\n");
    const [msA, msB] = await Promise.all([atA.until('shared-live-statement'), atB.until('shared-live-statement', 6000)]);
    assert.equal(psql.exitCode, null, 'psql is still connected');
    console.log(`# statement in the stream: at the recording gateway ${msA} ms, at the other ${msB} ms`);
    assert.ok(msA < 1000, `woken by the write at A: ${msA} ms`);
    psql.stdin.end();
    assert.equal(await exited, 0, out);
    for (const s of [atA, atB]) {
      await s.until('event: ended', 6000);
      await s.ended();
    }
  } finally {
    if (psql.exitCode === null) psql.kill();
  }
});
