// The sessions open on this gateway, and their re-authorisation. Admission (admission.ts) registers
// each session with the engine's kill callback; the registry ends it, with the reason recorded,
// when what it was admitted on no longer holds: its token is revoked or expires, its identity,
// key or connection is removed, its connect grant goes (directly or through a group), the
// connection's maximum session lifetime passes, or an administrator ends it.
//
// When: API routes that change tokens, grants, identities, keys, connections or groups call
// accessChanged(); a sweep every second ends sessions whose token expired or whose lifetime is
// up (from memory, no store reads); and every `recheckIntervalMs` all sessions are checked
// against the store anyway, for changes made elsewhere (another gateway sharing the store, an
// identity provider's groups at a person's next sign-in).
import type { Logger } from 'pino';
import type { Connection, Identity, Store, TokenRecord } from '../store/types.ts';
import type { SessionRecording } from '../recorder/recorder.ts';
import type { AccessService } from './access-service.ts';
import { formatDuration } from '../util/duration.ts';

export interface OpenSessionInfo {
  recording: SessionRecording;
  identity: Identity;
  /** The token it signed in with; null when it signed in with an SSH key. */
  token: Pick<TokenRecord, 'id' | 'expiresAt'> | null;
  /** SSH key sign-ins: the key's fingerprint (removing the key ends the session). */
  keyFingerprint?: string;
  connection: Connection;
  /** Ends the session with its protocol's own goodbye; `reason` becomes its end reason. */
  kill(reason: string): void;
}

export interface OpenSessionView {
  id: string; protocol: string; identity: string; connection: string; tokenId: string | null; startedAt: number; ending: string | null;
}

interface Entry extends OpenSessionInfo {
  startedAt: number;
  /** When the session must end without anyone asking: token expiry or the lifetime limit. */
  deadline: number;
  deadlineReason: string;
  /** Set once it was told to end (the reason), so it is told once. */
  ending: string | null;
  unregistered: Promise<void>;
  markUnregistered(): void;
}

export interface SessionRegistryOptions {
  sweepIntervalMs: number;
  recheckIntervalMs: number;
  /** How long sessions kill() waits for the session to be gone. */
  killWaitMs: number;
}

const DEFAULTS: SessionRegistryOptions = { sweepIntervalMs: 1000, recheckIntervalMs: 10_000, killWaitMs: 5000 };

export class SessionRegistry {
  private readonly store: Store;
  private readonly access: AccessService;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly options: SessionRegistryOptions;
  private readonly open = new Map<string, Entry>();
  /** Counts access changes, so that a session admitted while one was being applied is checked again. */
  private changes = 0;
  /** Re-checks run one after another, in the order asked for. */
  private chain: Promise<unknown> = Promise.resolve();
  private timers: NodeJS.Timeout[] = [];

  constructor(deps: { store: Store; access: AccessService; log: Logger; now?: () => number }, options: Partial<SessionRegistryOptions> = {}) {
    this.store = deps.store;
    this.access = deps.access;
    this.log = deps.log.child({ component: 'sessions' });
    this.now = deps.now ?? Date.now;
    this.options = { ...DEFAULTS, ...options };
  }

  start(): void {
    if (this.timers.length) return;
    this.timers.push(setInterval(() => this.sweep(), this.options.sweepIntervalMs).unref());
    this.timers.push(setInterval(() => { void this.recheck('periodic re-check'); }, this.options.recheckIntervalMs).unref());
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  /** The access-change count now: pass it to register() for the session being admitted. */
  get changeCount(): number {
    return this.changes;
  }

  /**
   * Adds an admitted session; returns what the engine calls once the session has ended.
   * `checkedAt` is changeCount when its token was checked: if access changed since, it is
   * checked again at once (the change may have been applied before it was here to be found).
   */
  register(info: OpenSessionInfo, checkedAt: number): () => void {
    const startedAt = this.now();
    const maxSeconds = info.connection.options.maxSessionSeconds;
    let deadline = info.token?.expiresAt ?? Infinity;
    let deadlineReason = 'token expired';
    if (maxSeconds !== undefined && startedAt + maxSeconds * 1000 < deadline) {
      deadline = startedAt + maxSeconds * 1000;
      deadlineReason = `maximum session lifetime of connection ${info.connection.name} (${formatDuration(maxSeconds)}) reached`;
    }
    let markUnregistered!: () => void;
    const unregistered = new Promise<void>((resolve) => { markUnregistered = resolve; });
    const entry: Entry = { ...info, startedAt, deadline, deadlineReason, ending: null, unregistered, markUnregistered };
    this.open.set(info.recording.id, entry);
    // Past its deadline already: the next sweep ends it (not now, while the engine is still setting it up).
    if (checkedAt !== this.changes) void this.enqueue(() => this.recheckEntries([entry]));
    return () => {
      if (this.open.get(info.recording.id) === entry) this.open.delete(info.recording.id);
      markUnregistered();
    };
  }

  list(): OpenSessionView[] {
    return [...this.open.values()].map((e) => ({
      id: e.recording.id, protocol: e.recording.row.protocol, identity: e.identity.name, connection: e.connection.name,
      tokenId: e.token?.id ?? null, startedAt: e.startedAt, ending: e.ending,
    }));
  }

  isOpen(sessionId: string): boolean {
    return this.open.has(sessionId);
  }

  /**
   * Ends one session (an administrator's `sessions kill`); resolves true once it is gone (or after
   * killWaitMs), false when no such session is open here.
   */
  async kill(sessionId: string, reason: string): Promise<boolean> {
    const entry = this.open.get(sessionId);
    if (!entry) return false;
    this.end(entry, reason);
    await Promise.race([entry.unregistered, new Promise((r) => setTimeout(r, this.options.killWaitMs).unref())]);
    return true;
  }

  /**
   * Something a session may have been admitted on changed (an API route says what): checks every
   * open session against the store again. Resolves with the ids of the sessions it ended.
   */
  accessChanged(cause: string): Promise<string[]> {
    this.changes++;
    return this.recheck(cause);
  }

  private recheck(cause: string): Promise<string[]> {
    return this.enqueue(async () => {
      const entries = [...this.open.values()].filter((e) => e.ending === null);
      if (entries.length) this.log.debug({ cause, sessions: entries.length }, 're-checking open sessions');
      return this.recheckEntries(entries);
    });
  }

  private enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = this.chain.then(job);
    this.chain = run.catch(() => {});
    return run;
  }

  /** Token expiry and lifetime limits, from memory. */
  private sweep(): void {
    const now = this.now();
    for (const e of this.open.values()) if (e.ending === null && e.deadline <= now) this.end(e, e.deadlineReason);
  }

  private async recheckEntries(entries: Entry[]): Promise<string[]> {
    const ended: string[] = [];
    // One read of an identity's tokens serves all its sessions.
    const tokensOf = new Map<string, Promise<TokenRecord[]>>();
    for (const e of entries) {
      if (e.ending !== null) continue;
      try {
        const reason = await this.whyNotAnyMore(e, tokensOf);
        if (reason && e.ending === null) {
          this.end(e, reason);
          ended.push(e.recording.id);
        }
      } catch (err) {
        this.log.warn({ session: e.recording.id, err: (err as Error).message }, 'could not re-check an open session; it stays open until the next check');
      }
    }
    return ended;
  }

  /** Why the session may no longer stay open, or null while everything it was admitted on holds. */
  private async whyNotAnyMore(e: Entry, tokensOf: Map<string, Promise<TokenRecord[]>>): Promise<string | null> {
    const identity = await this.store.getIdentity(e.identity.id);
    if (!identity) return 'identity removed';
    if (e.token) {
      let tokens = tokensOf.get(identity.id);
      if (!tokens) tokensOf.set(identity.id, tokens = this.store.listTokens(identity.id));
      const token = (await tokens).find((t) => t.id === e.token!.id);
      if (!token) return 'token removed';
      if (token.revokedAt !== null) return 'token revoked';
      if (token.expiresAt <= this.now()) return 'token expired';
    }
    if (e.keyFingerprint) {
      const key = await this.store.getPublicKeyByFingerprint(e.keyFingerprint);
      if (!key || key.identityId !== identity.id) return 'public key removed';
    }
    const connection = await this.store.getConnectionByName(e.connection.name);
    if (!connection || connection.id !== e.connection.id) return 'connection removed';
    const decision = await this.access.check(identity, 'connect', connection);
    if (!decision.allowed) return `access revoked: ${decision.reason}`;
    return null;
  }

  private end(e: Entry, reason: string): void {
    if (e.ending !== null) return;
    e.ending = reason;
    this.log.info({ session: e.recording.id, identity: e.identity.name, connection: e.connection.name, reason }, 'ending open session');
    // In the chain before the engine's own end records, so the recording says why it ended.
    if (!e.recording.isEnded) e.recording.append('session.terminated', { reason });
    try {
      e.kill(reason);
    } catch (err) {
      this.log.error({ session: e.recording.id, err: (err as Error).message }, 'could not end a session');
    }
  }
}
