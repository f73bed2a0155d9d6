// npm run bench:record — durable events per second through the shared recorder (hash chain,
// signed checkpoints and seals included), on the embedded SQLite store.
//   streaming:  many sessions append as fast as they can; the batches grow large.
//   lock-step:  each session waits for its statement to be durable before the next one, as the
//               PostgreSQL engine does (record before forward) — the latency-bound pattern.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import path from 'node:path';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import { Recorder, type SessionRecording } from '../src/recorder/recorder.ts';
import { loadSigningKey } from '../src/integrity/signing-keys.ts';
import { silentLogger } from '../src/util/logger.ts';
import { verifyStore } from '../src/integrity/store-verifier.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);

interface Result { name: string; events: number; seconds: number; commits: number }

async function withRecorder<T>(fsync: boolean, fn: (r: Recorder) => Promise<T>): Promise<{ value: T; recorder: Recorder; store: SqliteStore; dir: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-bench-record-'));
  const store = new SqliteStore(path.join(dir, 'gatehouse.db'), { fsync });
  const recorder = new Recorder(store, silentLogger(), loadSigningKey(path.join(dir, 'signing')), { checkpointIntervalMs: 1000 });
  await recorder.init();
  const value = await fn(recorder);
  return { value, recorder, store, dir };
}

function session(recorder: Recorder, i: number): Promise<SessionRecording> {
  return recorder.startSession({
    protocol: 'postgres', identityId: 'id_bench', identityName: 'bench', identityKind: 'agent', clientAddr: '127.0.0.1:1',
    applicationName: 'bench', connectionId: 'conn_bench', connectionName: 'bench', targetHost: '127.0.0.1', targetPort: 5432,
    targetDatabase: 'bench', targetUser: 'bench', recordingMode: 'durable',
  }, { n: i });
}

const statement = { text: 'SELECT abalance FROM pgbench_accounts WHERE aid = $1', params: ['48213'] };
const outcome = { ref: 0, tag: 'SELECT 1', rows: 1, durationUs: 87, columns: ['abalance'], sample: [['0']] };

async function streaming(fsync: boolean): Promise<Result> {
  const { value, recorder, store, dir } = await withRecorder(fsync, async (recorder) => {
    const sessions = await Promise.all(Array.from({ length: 64 }, (_, i) => session(recorder, i)));
    const c0 = recorder.stats.commits;
    const t0 = performance.now();
    let events = 0;
    while (performance.now() - t0 < SECONDS * 1000) {
      let last: Promise<void> = Promise.resolve();
      for (let k = 0; k < 2000; k++) {
        const s = sessions[k & 63];
        last = s.appendDurable('execute', statement).durable;
        s.append('result', outcome);
        events += 2;
      }
      await last; // durable: the batch holding the last event has committed
    }
    const seconds = (performance.now() - t0) / 1000;
    await Promise.all(sessions.map((s) => s.end('bench done')));
    return { name: `streaming, 64 sessions, fsync=${fsync}`, events, seconds, commits: recorder.stats.commits - c0 };
  });
  await finish(recorder, store, dir);
  return value;
}

async function lockStep(fsync: boolean, sessionsCount: number): Promise<Result> {
  const { value, recorder, store, dir } = await withRecorder(fsync, async (recorder) => {
    const sessions = await Promise.all(Array.from({ length: sessionsCount }, (_, i) => session(recorder, i)));
    const c0 = recorder.stats.commits;
    const t0 = performance.now();
    const deadline = t0 + SECONDS * 1000;
    let events = 0;
    await Promise.all(sessions.map(async (s) => {
      while (performance.now() < deadline) {
        await s.appendDurable('execute', statement).durable;
        s.append('result', outcome);
        events += 2;
      }
    }));
    const seconds = (performance.now() - t0) / 1000;
    await Promise.all(sessions.map((s) => s.end('bench done')));
    return { name: `lock-step, ${sessionsCount} sessions, fsync=${fsync}`, events, seconds, commits: recorder.stats.commits - c0 };
  });
  await finish(recorder, store, dir);
  return value;
}

async function finish(recorder: Recorder, store: SqliteStore, dir: string): Promise<void> {
  await recorder.close();
  const check = await verifyStore(store);
  if (check.problems.length > 0) throw new Error(`the benchmark's own recording does not verify: ${check.problems[0]}`);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}

const results: Result[] = [];
for (const fsync of [true, false]) {
  results.push(await streaming(fsync));
  results.push(await lockStep(fsync, 8));
  results.push(await lockStep(fsync, 64));
}

console.log(`\nRecorder throughput on SQLite (hash chain + Ed25519 checkpoints and seals; every store verified afterwards)`);
console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${SECONDS} s per run\n`);
console.log(['run'.padEnd(36), 'events/s'.padStart(10), 'events/commit'.padStart(14)].join('  '));
for (const r of results) {
  console.log([r.name.padEnd(36), Math.round(r.events / r.seconds).toLocaleString('en-US').padStart(10), (r.events / Math.max(1, r.commits)).toFixed(1).padStart(14)].join('  '));
}
const best = results.find((r) => r.name.startsWith('streaming') && r.name.endsWith('fsync=true'))!;
const rate = best.events / best.seconds;
console.log(`\ntarget ≥ 100,000 durable events/s on SQLite (streaming, fsync on): ${rate >= 100_000 ? 'MET' : 'NOT MET'} (${Math.round(rate).toLocaleString('en-US')})`);
