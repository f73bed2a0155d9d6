import type { Logger } from 'pino';
import { newSessionId, nowUs } from '../util/ids.ts';
import { eventHash, GENESIS_HASH } from '../integrity/hash-chain.ts';
import { signCheckpoint, signSeal } from '../integrity/payloads.ts';
import type { SigningKey } from '../integrity/signing-keys.ts';
import { readSealLogHead, writeSealLogHead } from '../integrity/seal-log-anchor.ts';
import { verifySessionEvidence } from '../integrity/verify.ts';
import { signTombstone, type RemovedSession } from '../integrity/tombstone.ts';
import { SessionsTakenOverError, type EventRow, type RecordBatch, type SealRow, type SessionEnd, type SessionOwner, type SessionRow, type Store, type TakenOverSession } from '../store/types.ts';
import { GatewayLease } from './gateway-lease.ts';
import { compactToGaps } from './backlog-overflow.ts';
import { GAP_EVENT_TYPE, gapPayloadOf, positionAfter } from '../integrity/gap-marker.ts';
import { maskEventData } from '../masking/event-masking.ts';

export interface RecorderOptions {
  /** Result rows kept per statement (the sample, not the full result). */
  sampleRows: number;
  /** Bytes of result data kept per statement. */
  sampleBytes: number;
  /** How often open sessions' chain heads are signed. */
  checkpointIntervalMs: number;
  /** Where the signed head of the seal log is kept, outside the store (null: nowhere). */
  sealLogHeadFile: string | null;
  /** This gateway's seal log (gateways sharing a store each keep their own), and the owner of the sessions it records. */
  gatewayId: string;
  /** A gateway that has not renewed its lease for this long is taken for dead: others take over and seal its open sessions. */
  leaseMs: number;
  /** How often the lease is renewed (and other gateways' lapsed leases looked for). */
  heartbeatMs: number;
  /**
   * Unwritten events kept in memory while the store cannot write; beyond that, each session's
   * unwritten events give way to a signed gap marker (see backlog-overflow.ts).
   */
  maxRetainedEvents: number;
}

export const DEFAULT_RECORDER_OPTIONS: RecorderOptions = {
  sampleRows: 100, sampleBytes: 64 * 1024, checkpointIntervalMs: 5000, sealLogHeadFile: null, gatewayId: '', leaseMs: 60_000, heartbeatMs: 10_000,
  maxRetainedEvents: 500_000,
};

/** Signs a seal (or a tombstone) at a position of the seal log: kept so that it can be signed again at another. */
type SealRecipe = (position: number, prevSealHash: string) => SealRow;

/** The seal-log head file is rewritten at most this often (and once more at close). */
const HEAD_WRITE_INTERVAL_MS = 100;

/** Longest time an event nobody waits for stays in memory before it is committed. */
const LAZY_FLUSH_MS = 2;

export type SessionStartInfo = Omit<SessionRow, 'id' | 'startedAt' | 'endedAt' | 'endReason' | 'eventCount'>;

interface PendingCommit {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * The shared recording stage. Every engine appends events here. Each event is hashed into its
 * session's chain as it is appended; open sessions' heads are signed every few seconds; a
 * session that ends is sealed into the gateway-wide seal log. Events are written in batches
 * (group commit): everything queued during one turn of the event loop goes to the store in one
 * transaction, and every caller waiting on durability is released by that single commit.
 */
export class Recorder {
  readonly options: RecorderOptions;
  private readonly store: Store;
  readonly log: Logger;
  private readonly key: SigningKey;
  private batch: RecordBatch;
  private commit: PendingCommit | null = null;
  private scheduled = false;
  /** Someone waits on an event queued since the last batch was taken (record before forward). */
  private urgentQueued = false;
  private lazyTimer: NodeJS.Timeout | null = null;
  private writer: Promise<void> | null = null;
  private checkpointTimer: NodeJS.Timeout | null = null;
  private readonly open = new Set<SessionRecording>();
  private lease: GatewayLease | null = null;
  /** How each seal not yet committed was signed (see surrender). */
  private readonly recipes = new WeakMap<SealRow, SealRecipe>();
  /**
   * Called for a session another gateway took over (this gateway's lease had lapsed): its recording
   * has ended here, and the session should end too (the gateway wires it to the session registry).
   */
  onTakenOver: ((sessionId: string, reason: string) => void) | null = null;
  private sealPosition = 0;
  private sealHead = GENESIS_HASH;
  /**
   * Commits and events written so far (events per commit is the group-commit factor); failed
   * writes; events given up to gap markers when the backlog overflowed; and whether the last
   * write failed (the recording is unavailable: durable statements are refused).
   */
  readonly stats = { commits: 0, events: 0, failedWrites: 0, droppedEvents: 0, gapMarkers: 0, failing: false, lastFailureAt: 0,
    /** Waits for durability (record before forward): how many, and their total in ms (queued to committed). */
    durableWaits: 0, durableWaitMs: 0 };
  /** Urgent events in the batch being filled, and the sum of their queueing times (performance.now). */
  private urgentInBatch = 0;
  private urgentQueuedAtSum = 0;

  /**
   * Hash chain, checkpoints and seals. Only `npm run bench:pg` turns them off, to measure what
   * they cost (GATEHOUSE_UNSAFE_NO_INTEGRITY=1); a recording made so does not verify.
   */
  readonly integrity = process.env.GATEHOUSE_UNSAFE_NO_INTEGRITY !== '1';

  constructor(store: Store, log: Logger, key: SigningKey, options: Partial<RecorderOptions> = {}) {
    this.store = store;
    this.log = log;
    this.key = key;
    this.options = { ...DEFAULT_RECORDER_OPTIONS, ...options };
    this.batch = emptyBatch(this.options.gatewayId);
  }

  /**
   * Registers the signing key, continues the seal log where it stopped, starts the gateway's lease,
   * and seals (as interrupted) the sessions this gateway left open when it stopped, and those of
   * gateways whose lease expired. Call once before recording.
   */
  async init(): Promise<void> {
    if (!this.integrity) this.log.warn('GATEHOUSE_UNSAFE_NO_INTEGRITY=1: recordings are not chained or signed (benchmarking only)');
    await this.store.saveSigningKey({ keyId: this.key.keyId, publicKeyPem: this.key.publicKeyPem, createdAt: Date.now() });
    const last = await this.store.lastSeal(this.options.gatewayId);
    if (last) { this.sealPosition = last.position; this.sealHead = last.hash; }
    this.checkSealLogHead(last?.position ?? 0, last?.hash);
    const { gatewayId, leaseMs, heartbeatMs } = this.options;
    await this.store.startGatewayLease(gatewayId);
    const interrupted = await this.store.takeOverSessions(gatewayId, { leaseMs, own: true });
    const unsealed = await this.sealTakenOver(interrupted);
    if (unsealed.length > 0) throw new Error(`could not read ${unsealed.length} interrupted session(s) to seal them: the store failed`);
    if (interrupted.length > 0) this.log.warn({ sessions: interrupted.length }, 'sealed sessions interrupted by an earlier stop');
    this.lease = new GatewayLease(this.store, {
      openSessionIds: () => [...this.open].map((s) => s.id),
      surrender: (lost) => this.surrender(lost, [this.batch]),
      sealTakenOver: (taken) => this.sealTakenOver(taken),
    }, this.log, { gatewayId, leaseMs, heartbeatMs });
    this.lease.start();
    this.checkpointTimer = setInterval(() => this.checkpoint(), this.options.checkpointIntervalMs);
    this.checkpointTimer.unref();
  }

  /** Runs the lease's heartbeat now (it also runs every heartbeatMs). */
  heartbeat(): Promise<void> {
    return this.lease?.heartbeat() ?? Promise.resolve();
  }

  /**
   * Seals sessions this gateway now owns but nobody records: its own, left open when it stopped,
   * and those of gateways whose lease expired. Each is checked, its unanswered statements marked,
   * and ended as interrupted at its last recorded event, through the usual end and seal. Returns
   * those whose recordings could not be read (the store failed): they are still to be sealed.
   */
  async sealTakenOver(taken: TakenOverSession[]): Promise<TakenOverSession[]> {
    const unsealed: TakenOverSession[] = [];
    const ends: Array<Promise<void>> = [];
    let keys: Map<string, string> | null = null;
    for (const t of taken) {
      const { session: row, previousOwner } = t;
      const why = previousOwner === this.options.gatewayId || previousOwner === ''
        ? 'interrupted: the gateway stopped before the session ended'
        : `interrupted: gateway ${previousOwner} stopped renewing its lease before the session ended; sealed by gateway ${this.options.gatewayId}`;
      let lastEvent: EventRow | undefined;
      let events: EventRow[];
      let check: ReturnType<typeof verifySessionEvidence>;
      try {
        keys ??= new Map((await this.store.listSigningKeys()).map((k) => [k.keyId, k.publicKeyPem]));
        lastEvent = await this.store.lastEvent(row.id);
        // Check what was recorded before vouching for it: a seal over a damaged chain says so.
        const checkpoints = await this.store.listCheckpoints(row.id);
        events = await this.store.listEvents(row.id);
        check = verifySessionEvidence({ sessionId: row.id, events, checkpoints, seal: null, keys, open: true });
      } catch (err) {
        this.log.error({ session: row.id, err: (err as Error).message }, 'could not read an interrupted session to seal it; trying again later');
        unsealed.push(t);
        continue;
      }
      const session = new SessionRecording(this, row, lastEvent ? positionAfter(lastEvent) : 0, lastEvent?.hash ?? GENESIS_HASH);
      this.open.add(session);
      // The session ended, as far as anyone can tell, with its last recorded event.
      const lastRow = events.at(-1);
      const lastTs = lastRow === undefined ? undefined : lastRow.type === GAP_EVENT_TYPE ? gapPayloadOf(lastRow).lastTs : lastRow.ts;
      if (check.ok || check.incomplete) markUnanswered(session, events, lastTs ?? nowUs());
      // From here the seal is the recorder's: a failed write is kept and written once the store works.
      const found = check.ok ? '' : check.incomplete ? `; ${check.problem}` : `; the recording was found damaged before sealing: ${check.problem}`;
      ends.push(session.end(`${why}${found}`, lastTs).catch((err: unknown) => {
        this.log.error({ session: row.id, err: (err as Error).message }, 'the seal of an interrupted session is not written yet; it is kept and retried');
      }));
    }
    await Promise.all(ends);
    return unsealed;
  }

  /**
   * Gives up sessions another gateway owns now: it took them over while this gateway's lease had
   * lapsed, and sealed them. Their recordings end here (waiters on their events are refused, later
   * events are not recorded), nothing queued for them is written, and the seals queued after one of
   * theirs are signed again at the positions that close the gap, so this gateway's seal log stays
   * one unbroken chain. `batches`: every batch not yet committed, oldest first.
   */
  private surrender(lost: SessionOwner[], batches: RecordBatch[]): void {
    const ids = new Set(lost.map((l) => l.sessionId));
    for (const l of lost) {
      const session = [...this.open].find((s) => s.id === l.sessionId);
      const reason = `recording taken over by gateway ${l.gatewayId || '(none)'}: this gateway's lease had lapsed`;
      this.log.error({ session: l.sessionId, owner: l.gatewayId }, `session ${reason}; it ends here`);
      if (!session) continue;
      this.open.delete(session);
      session.lose(new SessionTakenOverError(l.sessionId, l.gatewayId));
      this.onTakenOver?.(l.sessionId, reason);
    }
    for (const b of batches) {
      b.sessionsStarted = b.sessionsStarted.filter((x) => !ids.has(x.id));
      b.events = b.events.filter((x) => !ids.has(x.sessionId));
      b.sessionsEnded = b.sessionsEnded.filter((x) => !ids.has(x.sessionId));
      b.checkpoints = b.checkpoints.filter((x) => !ids.has(x.sessionId));
    }
    let next: { position: number; prev: string } | null = null;
    for (const b of batches) {
      const kept: SealRow[] = [];
      for (const x of b.seals) {
        if (next === null && !ids.has(x.sessionId)) { kept.push(x); continue; }
        next ??= { position: x.position, prev: (JSON.parse(x.payload) as { prevSealHash: string }).prevSealHash };
        if (ids.has(x.sessionId)) continue;
        const recipe = this.recipes.get(x)!;
        const again = recipe(next.position, next.prev);
        this.recipes.set(again, recipe);
        kept.push(again);
        next = { position: next.position + 1, prev: again.hash };
      }
      b.seals = kept;
    }
    if (next) { this.sealPosition = next.position - 1; this.sealHead = next.prev; }
  }

  /** Refuses to continue a seal log whose end was cut off while the gateway was down. */
  private checkSealLogHead(storedPosition: number, storedHash: string | undefined): void {
    const file = this.options.sealLogHeadFile;
    if (!file) return;
    const anchored = readSealLogHead(file);
    if (!anchored) return;
    const head = JSON.parse(anchored.payload) as { position: number; hash: string };
    if (head.position > storedPosition) {
      throw new Error(`the seal log in the store ends at position ${storedPosition}, but this gateway sealed up to position ${head.position} ` +
        `(${file}): sealed sessions were removed from the store. Refusing to continue the log; investigate, and move the file aside only deliberately.`);
    }
  }

  private headTimer: NodeJS.Timeout | null = null;
  private headWrittenAt = 0;

  /** Keeps the signed seal-log head file current, at most every HEAD_WRITE_INTERVAL_MS. */
  private anchorSealLog(now = false): void {
    const file = this.options.sealLogHeadFile;
    if (!file || this.committedSealPosition === 0) return;
    const due = this.headWrittenAt + HEAD_WRITE_INTERVAL_MS - Date.now();
    if (now || due <= 0) {
      if (this.headTimer) { clearTimeout(this.headTimer); this.headTimer = null; }
      this.headWrittenAt = Date.now();
      try {
        writeSealLogHead(file, this.key, this.options.gatewayId, this.committedSealPosition, this.committedSealHash);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'could not write the seal log head');
      }
    } else if (!this.headTimer) {
      this.headTimer = setTimeout(() => { this.headTimer = null; this.anchorSealLog(); }, due);
      this.headTimer.unref();
    }
  }

  private committedSealPosition = 0;
  private committedSealHash = GENESIS_HASH;

  /** Creates the session and its start event; resolves once both are durable. */
  async startSession(info: SessionStartInfo, details: Record<string, unknown> = {}): Promise<SessionRecording> {
    const row: SessionRow = { ...info, id: newSessionId(), startedAt: nowUs(), endedAt: null, endReason: null, eventCount: 0 };
    const session = new SessionRecording(this, row, 0, GENESIS_HASH);
    this.batch.sessionsStarted.push(row);
    const pending = session.record('session.start', {
      protocol: row.protocol,
      // Claims and auth method go into the signed chain too: the session row alone is not sealed.
      identity: { id: row.identityId, name: row.identityName, kind: row.identityKind, ...(row.identityClaims ? { claims: row.identityClaims } : {}) },
      ...(row.authMethod ? { authMethod: row.authMethod } : {}),
      clientAddr: row.clientAddr, applicationName: row.applicationName,
      connection: { id: row.connectionId, name: row.connectionName },
      target: { host: row.targetHost, port: row.targetPort, database: row.targetDatabase, user: row.targetUser },
      recording: row.recordingMode,
      ...details,
    }, row.startedAt);
    this.open.add(session);
    try {
      await pending;
    } catch (err) {
      // The attempt stays on record (written once the store recovers), ended as refused.
      void session.end('refused: the recording store was unavailable');
      throw err;
    }
    return session;
  }

  /**
   * Records a refused attempt as a session of its own: the start, an `access.denied` event with
   * `denied` (at least a message), and the end `refused: <reason>`. Resolves false when the store
   * cannot record (the attempt is kept and written once it recovers); other errors are thrown.
   */
  async recordRefusal(info: SessionStartInfo, details: Record<string, unknown>, denied: { message: string } & Record<string, unknown>, reason: string = denied.message): Promise<boolean> {
    try {
      const rec = await this.startSession(info, details);
      rec.append('access.denied', denied);
      await rec.end(`refused: ${reason}`);
      return true;
    } catch (err) {
      if (!(err instanceof RecordingUnavailableError)) throw err;
      this.log.error({ err: err.message, protocol: info.protocol }, 'could not record a refused attempt');
      return false;
    }
  }

  /**
   * Queues an event; the returned promise settles when the batch holding it is committed.
   * An urgent event (someone waits on it: record before forward) is committed at the end of
   * this event-loop turn; others ride along with the next commit, or within LAZY_FLUSH_MS.
   */
  enqueue(event: EventRow, urgent: boolean): Promise<void> {
    this.batch.events.push(event);
    return this.pendingCommit(urgent).promise;
  }

  /** Ends a session: its end row and its seal, linked to the previous seal, commit together. */
  enqueueEnd(session: SessionRecording, end: SessionEnd, head: string): Promise<void> {
    this.batch.sessionsEnded.push(end);
    if (!this.integrity) {
      this.open.delete(session);
      return this.pendingCommit(true).promise;
    }
    const recipe: SealRecipe = (position, prev) => signSeal(this.key, this.options.gatewayId, position, prev, session.row, { ...end, head });
    const seal = recipe(++this.sealPosition, this.sealHead);
    this.recipes.set(seal, recipe);
    this.sealHead = seal.hash;
    this.batch.seals.push(seal);
    this.open.delete(session);
    return this.pendingCommit(true).promise;
  }

  /**
   * Appends a signed tombstone for sessions about to be removed (retention) to the seal log;
   * resolves once it is durable, so the removal is explained before it happens.
   */
  tombstone(removed: RemovedSession[], reason: string): Promise<void> {
    const at = nowUs();
    const recipe: SealRecipe = (position, prev) => signTombstone(this.key, this.options.gatewayId, position, prev, removed, reason, at);
    const row = recipe(++this.sealPosition, this.sealHead);
    this.recipes.set(row, recipe);
    this.sealHead = row.hash;
    this.batch.seals.push(row);
    return this.pendingCommit(true).promise;
  }

  /** Signs the chain head of every open session that has new events since its last checkpoint. */
  checkpoint(): void {
    if (!this.integrity) return;
    const ts = nowUs();
    let signed = 0;
    for (const s of this.open) {
      const seq = s.eventCount - 1;
      if (seq < 0 || seq === s.checkpointedSeq) continue;
      this.batch.checkpoints.push(signCheckpoint(this.key, s.id, seq, s.head, ts));
      s.checkpointedSeq = seq;
      signed++;
    }
    if (signed > 0) void this.pendingCommit(false).promise;
  }

  private pendingCommit(urgent: boolean): PendingCommit {
    if (!this.commit) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
      // Fire-and-forget callers never observe the rejection; it is logged once in the writer.
      promise.catch(() => {});
      this.commit = { promise, resolve, reject };
    }
    if (urgent) {
      this.urgentQueued = true;
      this.urgentInBatch++;
      this.urgentQueuedAtSum += performance.now();
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flushNow);
      }
    } else if (!this.scheduled && !this.lazyTimer) {
      this.lazyTimer = setTimeout(this.flushNow, LAZY_FLUSH_MS);
    }
    return this.commit;
  }

  private readonly flushNow = (): void => { void this.flush(); };

  /** Writes everything queued so far. One writer loop at a time; events queued meanwhile form the next batch. */
  flush(): Promise<void> {
    this.scheduled = false;
    if (this.lazyTimer) {
      clearTimeout(this.lazyTimer);
      this.lazyTimer = null;
    }
    if (this.wakeWriter && (this.urgentQueued || this.closing)) this.wakeWriter();
    if (!this.writer) this.writer = this.writeLoop().finally(() => { this.writer = null; });
    return this.writer;
  }

  private async writeLoop(): Promise<void> {
    const depth = this.store.writeDepth ?? 1;
    if (depth > 1) return this.pipelinedWriteLoop(depth);
    let first = true;
    while (this.commit) {
      if (!first && !this.urgentQueued && !this.closing) {
        // Only events nobody waits for (outcomes, checkpoints) came in during the last write: they
        // do not start a commit of their own, which would hold up the next statement's record
        // for a whole fsync; they ride with the next urgent batch, or go within LAZY_FLUSH_MS.
        if (!this.scheduled && !this.lazyTimer) this.lazyTimer = setTimeout(this.flushNow, LAZY_FLUSH_MS);
        break;
      }
      first = false;
      const w = this.takeBatch();
      try {
        await this.store.writeBatch(w.batch);
        this.committed(w);
      } catch (err) {
        if (err instanceof SessionsTakenOverError) {
          // Nothing was written. Without the sessions another gateway owns now, write the rest
          // again at once, together with whatever was queued meanwhile.
          this.surrender(err.sessions, [w.batch, this.batch]);
          this.batch = mergeBatches(w.batch, this.batch);
          const queued = this.commit as PendingCommit | null; // set again by whatever was queued meanwhile
          if (queued) queued.promise.then(w.commit.resolve, w.commit.reject);
          else this.commit = w.commit;
          this.urgentQueued = true;
          continue;
        }
        this.writeFailed(w.batch, err, [w.commit]);
        return;
      }
    }
  }

  /**
   * Continuous group commit with up to `depth` batches in flight (a store whose writes overlap on
   * the disk, as the journal's do): the next batch starts while the last is being made durable;
   * they settle in order, and a failure takes back that batch and every later one, in order.
   */
  private async pipelinedWriteLoop(depth: number): Promise<void> {
    const inFlight: Array<TakenBatch & { settled: Promise<void>; done: boolean; error: unknown }> = [];
    let first = true;
    for (;;) {
      while (this.commit && inFlight.length < depth && (first || this.urgentQueued || this.closing)) {
        first = false;
        const w = this.takeBatch();
        const entry = { ...w, settled: Promise.resolve(), done: false, error: undefined as unknown };
        entry.settled = this.store.writeBatch(w.batch).then(() => { entry.done = true; }, (err: unknown) => { entry.done = true; entry.error = err ?? new Error('write failed'); });
        inFlight.push(entry);
      }
      const head = inFlight[0];
      if (!head) {
        // Only events nobody waits for are queued (see writeLoop).
        if (this.commit && !this.scheduled && !this.lazyTimer) this.lazyTimer = setTimeout(this.flushNow, LAZY_FLUSH_MS);
        return;
      }
      if (inFlight.length < depth) {
        // Room for another write: wake up for the first batch someone waits on (see flush).
        await Promise.race([head.settled, new Promise<void>((resolve) => { this.wakeWriter = resolve; })]);
        this.wakeWriter = null;
        if (!head.done) continue;
      } else {
        await head.settled;
      }
      inFlight.shift();
      if (head.error !== undefined) {
        // The store fails every batch given after a failed one: take them all back, in order.
        const failed = [head, ...inFlight.splice(0)];
        for (const w of failed.slice(1)) await w.settled;
        const batch = failed.map((w) => w.batch).reduce((a, b) => mergeBatches(a, b));
        if (head.error instanceof SessionsTakenOverError) this.surrender(head.error.sessions, [batch, this.batch]);
        this.writeFailed(batch, head.error, failed.map((w) => w.commit));
        return;
      }
      this.committed(head);
    }
  }

  /** Set while the pipelined writer waits with room for another write. */
  private wakeWriter: (() => void) | null = null;

  /** The batch being filled becomes one being written; the next fills behind it. */
  private takeBatch(): TakenBatch {
    const taken: TakenBatch = { batch: this.batch, commit: this.commit!, urgentWaits: this.urgentInBatch, urgentQueuedAtSum: this.urgentQueuedAtSum };
    this.batch = emptyBatch(this.options.gatewayId);
    this.commit = null;
    this.urgentQueued = false;
    this.urgentInBatch = 0;
    this.urgentQueuedAtSum = 0;
    return taken;
  }

  /** A batch is durable: count it, move the seal log's anchor, release its waiters. */
  private committed(w: TakenBatch): void {
    this.stats.failing = false;
    this.stats.commits++;
    this.stats.events += w.batch.events.length;
    if (w.batch.seals.length > 0) {
      const lastSeal = w.batch.seals[w.batch.seals.length - 1];
      this.committedSealPosition = lastSeal.position;
      this.committedSealHash = lastSeal.hash;
      this.anchorSealLog();
    }
    this.stats.durableWaits += w.urgentWaits;
    this.stats.durableWaitMs += w.urgentWaits * performance.now() - w.urgentQueuedAtSum;
    w.commit.resolve();
  }

  /** A write failed: keep the batch in front of what comes next, tell its waiters, retry later. */
  private writeFailed(failed: RecordBatch, err: unknown, commits: PendingCommit[]): void {
    let batch = failed;
    const message = err instanceof Error ? err.message : String(err);
    this.stats.failedWrites++;
    this.stats.failing = true;
    this.stats.lastFailureAt = Date.now();
    // Keep what failed, in order, in front of what comes next: the chain must reach the
    // store without holes once it works again. Waiters are told now (fail closed). Past the
    // memory budget, each session's unwritten events give way to a signed gap marker, which
    // is written in front of everything later: no event reaches the store after a hole
    // that the record does not declare.
    let retained = batch.events;
    if (batch.events.length + this.batch.events.length > this.options.maxRetainedEvents) {
      const compacted = compactToGaps(batch, this.integrity ? this.key : null, `the recording store could not write (${message}) and the gateway's backlog of ${this.options.maxRetainedEvents} unwritten events was full`);
      this.stats.droppedEvents += compacted.dropped;
      this.stats.gapMarkers += compacted.dropped > 0 ? compacted.sessions : 0;
      this.log.fatal({ dropped: compacted.dropped, sessions: compacted.sessions, droppedTotal: this.stats.droppedEvents },
        'recording backlog full: unwritten events replaced by signed gap markers; those sessions will verify as incomplete');
      batch = compacted.batch;
      retained = batch.events;
    }
    this.batch = mergeBatches(batch, this.batch);
    if (!this.retryTimer) {
      this.retryTimer = setTimeout(() => { this.retryTimer = null; if (this.hasUnwritten()) void this.pendingCommit(true); }, RETRY_MS);
      this.retryTimer.unref();
    }
    this.log.error({ err: message, events: retained.length, retained: this.batch.events.length }, 'recording store write failed; statements are refused until it works again');
    for (const c of commits) c.reject(new RecordingUnavailableError(message));
  }

  private hasUnwritten(): boolean {
    const b = this.batch;
    return b.events.length + b.sessionsStarted.length + b.sessionsEnded.length + b.checkpoints.length + b.seals.length > 0;
  }

  private retryTimer: NodeJS.Timeout | null = null;

  /** Ends every open session (used on shutdown) and waits for the final commit. */
  private closing = false;

  async close(reason = 'gateway shutdown'): Promise<void> {
    this.closing = true;
    await this.lease?.stop();
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const s of [...this.open]) void s.end(reason);
    while (this.commit || this.writer) await this.flush();
    this.anchorSealLog(true);
    const waitUs = this.stats.durableWaits > 0 ? Math.round((1000 * this.stats.durableWaitMs) / this.stats.durableWaits) : null;
    this.log.info({ commits: this.stats.commits, events: this.stats.events, durableWaits: this.stats.durableWaits, durableWaitUs: waitUs }, 'recorder closed');
  }
}

export class RecordingUnavailableError extends Error {
  constructor(cause: string) {
    super(`recording store unavailable: ${cause}`);
  }
}

/** The session's recording was taken over by another gateway: nothing more is recorded for it here. */
export class SessionTakenOverError extends RecordingUnavailableError {
  constructor(sessionId: string, owner: string) {
    super(`session ${sessionId} was taken over and sealed by gateway ${owner || '(none)'} while this gateway's lease had lapsed`);
  }
}

/** One session's event stream: sequence numbers and chain hashes are assigned here, in order. */
export class SessionRecording {
  readonly row: SessionRow;
  private readonly recorder: Recorder;
  private seq: number;
  private ended = false;
  /** Set when another gateway took the session over: why its events are refused. */
  private lost: Error | null = null;
  /** Hash of the last appended event (the chain head). */
  head: string;
  /** Sequence number covered by the last signed checkpoint. */
  checkpointedSeq = -1;

  constructor(recorder: Recorder, row: SessionRow, nextSeq: number, head: string) {
    this.recorder = recorder;
    this.row = row;
    this.seq = nextSeq;
    this.head = head;
  }

  get id(): string { return this.row.id; }
  get eventCount(): number { return this.seq; }
  get isEnded(): boolean { return this.ended; }

  private enqueue(type: string, data: unknown, ts: number, urgent: boolean): { seq: number; durable: Promise<void> } {
    if (this.ended) return this.late(type);
    const seq = this.seq++;
    // Nothing secret in the store: masked before it is hashed into the chain (see masking/event-masking.ts).
    const event: EventRow = { sessionId: this.row.id, seq, ts, type, data: JSON.stringify(maskEventData(type, data)), hash: '' };
    if (this.recorder.integrity) {
      event.hash = eventHash(event, this.head);
      this.head = event.hash;
    }
    return { seq, durable: this.recorder.enqueue(event, urgent) };
  }

  /**
   * An event after the end (say, an agent channel that closes after its session did): the chain
   * is sealed, so it is not recorded — logged, and a caller waiting to forward is refused.
   */
  private late(type: string): { seq: number; durable: Promise<void> } {
    this.recorder.log.warn({ session: this.row.id, event: type }, 'event after the session ended; not recorded');
    const refused = Promise.reject(new Error(`session ${this.row.id} already ended`));
    refused.catch(() => undefined); // only callers that wait (record before forward) see it
    return { seq: -1, durable: refused };
  }

  /** Appends an event nobody waits for (an outcome, a notice); returns its sequence number. */
  append(type: string, data: unknown, ts: number = nowUs()): number {
    return this.enqueue(type, data, ts, false).seq;
  }

  /** Appends an event that must be committed before the caller goes on; `durable` says when. */
  appendDurable(type: string, data: unknown, ts: number = nowUs()): { seq: number; durable: Promise<void> } {
    const queued = this.enqueue(type, data, ts, true);
    if (queued.seq < 0) return queued;
    // The commit that releases it may have dropped it: the session was taken over meanwhile.
    const durable = queued.durable.then(() => { if (this.lost) throw this.lost; });
    durable.catch(() => undefined); // only callers that wait see it
    return { seq: queued.seq, durable };
  }

  /** Another gateway took the session over (see Recorder.surrender): the recording ends here, unwritten. */
  lose(reason: Error): void {
    this.lost = reason;
    this.ended = true;
  }

  /**
   * Record before forward, as the session's recording mode says: durable sessions get a promise
   * that settles once the event is committed; best-effort ones append and get undefined (nothing
   * to wait for).
   */
  beforeForward(type: string, data: unknown): Promise<void> | undefined {
    if (this.row.recordingMode === 'best-effort') {
      this.append(type, data);
      return undefined;
    }
    return this.record(type, data);
  }

  /** Appends and waits until durable: the record-before-forward path. */
  record(type: string, data: unknown, ts?: number): Promise<void> {
    return this.appendDurable(type, data, ts ?? nowUs()).durable;
  }

  /** Ends the recording; `at` (µs) when it ended earlier than now (a session found interrupted). */
  end(reason: string, at?: number): Promise<void> {
    if (this.ended) return Promise.resolve();
    const ts = at ?? nowUs();
    this.enqueue('session.end', { reason }, ts, true);
    this.ended = true;
    return this.recorder.enqueueEnd(this, { sessionId: this.row.id, endedAt: ts, endReason: reason, eventCount: this.seq }, this.head);
  }
}

/** A batch taken from the recorder to be written, with what it needs once durable. */
interface TakenBatch { batch: RecordBatch; commit: PendingCommit; urgentWaits: number; urgentQueuedAtSum: number }

/** How soon a failed write is tried again when nothing else triggers a commit. */
const RETRY_MS = 1000;

function mergeBatches(a: RecordBatch, b: RecordBatch): RecordBatch {
  return {
    gatewayId: a.gatewayId,
    sessionsStarted: a.sessionsStarted.concat(b.sessionsStarted), events: a.events.concat(b.events),
    sessionsEnded: a.sessionsEnded.concat(b.sessionsEnded), checkpoints: a.checkpoints.concat(b.checkpoints), seals: a.seals.concat(b.seals),
  };
}

function emptyBatch(gatewayId: string): RecordBatch {
  return { gatewayId, sessionsStarted: [], events: [], sessionsEnded: [], checkpoints: [], seals: [] };
}

/** Events that expect an outcome (a `result` naming them by `ref`). */
const AWAITS_RESULT = new Set(['query', 'execute', 'function_call']);

/**
 * A crashed gateway never recorded the outcome of statements that were in flight: say so, as a
 * disconnect does, so a reader does not take a missing outcome for a lost record.
 */
function markUnanswered(session: SessionRecording, events: readonly EventRow[], ts: number): void {
  const answered = new Set<number>();
  for (const e of events) if (e.type === 'result') answered.add(Number((JSON.parse(e.data) as { ref?: unknown }).ref));
  for (const e of events) {
    if (AWAITS_RESULT.has(e.type) && !answered.has(e.seq)) {
      session.append('result', { ref: e.seq, durationUs: 0, incomplete: 'interrupted: the gateway stopped before the target answered' }, ts);
    }
  }
}
