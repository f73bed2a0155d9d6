// Runs in a worker thread: commits recording batches so that the fsync of each group commit
// never blocks the event loop that relays client traffic.
import { parentPort, workerData } from 'node:worker_threads';
import { DatabaseSync } from 'node:sqlite';
import { RecordBatchWriter } from './record-batch-sql.ts';
import { SessionsTakenOverError, type RecordBatch } from '../types.ts';

const { file, synchronous } = workerData as { file: string; synchronous: 'FULL' | 'NORMAL' };
const db = new DatabaseSync(file);
db.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=${synchronous === 'NORMAL' ? 'NORMAL' : 'FULL'}; PRAGMA busy_timeout=5000;`);
const writer = new RecordBatchWriter(db);

parentPort!.on('message', (msg: { id: number; batch: RecordBatch } | { close: true }) => {
  if ('close' in msg) {
    db.close();
    parentPort!.postMessage({ closed: true });
    return;
  }
  try {
    writer.write(msg.batch);
    parentPort!.postMessage({ id: msg.id });
  } catch (err) {
    const lost = err instanceof SessionsTakenOverError ? err.sessions : undefined;
    parentPort!.postMessage({ id: msg.id, error: (err as Error).message, lost });
  }
});
