// Failed sign-ins per source address, shared by every listener (PostgreSQL, SSH, Git HTTP and the
// API's bearer tokens). After `maxFailures` failures within `windowMs` from one source, that
// source is locked out for `lockoutMs`: every sign-in from it is refused at once, without the
// token being looked at — a correct token too, so that guessing goes nowhere during a lockout.
//
// Refusals stay on record, but a flood would otherwise write one durable, fsynced session per
// wrong token: only the first `recordedPerWindow` refusals of a source per window are recorded one
// by one; the rest are counted and written as one summary per source, protocol and window.
//
// A source is an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64). The table is
// bounded (`maxSources`): when full, the least recently started entries go first.
import { isIP } from 'node:net';
import { isLoopback } from '../util/address.ts';

export interface AuthLimits {
  /** Failed sign-ins from one source within windowMs before it is locked out. 0: no limit. */
  maxFailures: number;
  windowMs: number;
  /** How long a locked-out source is refused. */
  lockoutMs: number;
  /** Refusals per source and window recorded one by one; later ones go into a summary. */
  recordedPerWindow: number;
  /** Loopback clients are counted like any other unless this is set. */
  exemptLoopback: boolean;
  /** Sources tracked at once (memory bound). */
  maxSources: number;
}

export const DEFAULT_AUTH_LIMITS: AuthLimits = {
  maxFailures: 20, windowMs: 60_000, lockoutMs: 300_000, recordedPerWindow: 10, exemptLoopback: false, maxSources: 100_000,
};

/** Refusals not recorded one by one, for the summary record. */
export interface RefusalSummary {
  protocol: string;
  source: string;
  /** The last client address seen (a source may be a /64). */
  clientAddr: string;
  /** Failed sign-ins (tokens checked and refused). */
  failed: number;
  /** Attempts refused during a lockout, tokens not checked. */
  rateLimited: number;
  firstAt: number;
  lastAt: number;
  reasons: Record<string, number>;
  /** The connections asked for (at most MAX_NAMES). */
  connections: string[];
}

const MAX_NAMES = 10;
const MAX_REASONS = 10;

interface Source {
  windowStart: number;
  failures: number;
  lockedUntil: number;
  recorded: number;
  unrecorded: Map<string, RefusalSummary>;
}

export class AuthThrottle {
  readonly limits: AuthLimits;
  private readonly now: () => number;
  private readonly sources = new Map<string, Source>();
  /** Summaries of sources dropped from a full table, handed out by the next takeSummaries(). */
  private evicted: RefusalSummary[] = [];

  constructor(limits: Partial<AuthLimits> = {}, now: () => number = Date.now) {
    this.limits = { ...DEFAULT_AUTH_LIMITS, ...limits };
    this.now = now;
  }

  get enabled(): boolean { return this.limits.maxFailures > 0; }

  /** Milliseconds until this address may sign in again; 0 when it may now. */
  lockedFor(addr: string): number {
    if (!this.counts(addr)) return 0;
    const source = this.current(sourceKey(addr), false);
    if (!source) return 0;
    return Math.max(0, source.lockedUntil - this.now());
  }

  /**
   * A failed sign-in from `addr`. Returns whether its refusal is to be recorded one by one
   * (otherwise pass it to unrecorded()), and whether it started a lockout.
   */
  failed(addr: string): { record: boolean; lockedOut: boolean } {
    if (!this.counts(addr)) return { record: true, lockedOut: false };
    const source = this.current(sourceKey(addr), true)!;
    source.failures++;
    const lockedOut = source.failures >= this.limits.maxFailures && source.lockedUntil === 0;
    if (lockedOut) source.lockedUntil = this.now() + this.limits.lockoutMs;
    return { record: this.mayRecord(source), lockedOut };
  }

  /** A refusal during a lockout: whether it is to be recorded one by one (rarely: the budget is shared). */
  rateLimited(addr: string): { record: boolean } {
    const source = this.current(sourceKey(addr), true)!;
    return { record: this.mayRecord(source) };
  }

  /** Counts a refusal that was not recorded one by one, for its source's summary. */
  unrecorded(addr: string, protocol: string, o: { rateLimited: boolean; reason: string; connection: string }): void {
    const key = sourceKey(addr);
    const source = this.current(key, true)!;
    const now = this.now();
    let s = source.unrecorded.get(protocol);
    if (!s) {
      s = { protocol, source: key, clientAddr: addr, failed: 0, rateLimited: 0, firstAt: now, lastAt: now, reasons: {}, connections: [] };
      source.unrecorded.set(protocol, s);
    }
    if (o.rateLimited) s.rateLimited++; else s.failed++;
    s.lastAt = now;
    s.clientAddr = addr;
    if (s.reasons[o.reason] !== undefined || Object.keys(s.reasons).length < MAX_REASONS) s.reasons[o.reason] = (s.reasons[o.reason] ?? 0) + 1;
    if (o.connection && s.connections.length < MAX_NAMES && !s.connections.includes(o.connection)) s.connections.push(o.connection);
  }

  /**
   * Summaries due: those whose window is over (at most one per source, protocol and window), or
   * every one (`all`, at shutdown). Also forgets sources with nothing left to count.
   */
  takeSummaries(all = false): RefusalSummary[] {
    const now = this.now();
    const out = this.evicted;
    this.evicted = [];
    for (const [key, source] of this.sources) {
      for (const [protocol, s] of source.unrecorded) {
        if (all || now - s.firstAt >= this.limits.windowMs) { out.push(s); source.unrecorded.delete(protocol); }
      }
      if (source.unrecorded.size === 0 && this.expired(source, now)) this.sources.delete(key);
    }
    return out;
  }

  private counts(addr: string): boolean {
    return this.enabled && !(this.limits.exemptLoopback && isLoopback(addr));
  }

  private mayRecord(source: Source): boolean {
    if (source.recorded >= this.limits.recordedPerWindow) return false;
    source.recorded++;
    return true;
  }

  private expired(source: Source, now: number): boolean {
    return source.lockedUntil > 0 ? now >= source.lockedUntil : now - source.windowStart >= this.limits.windowMs;
  }

  /** The source's entry, with its window (or lockout) restarted when it is over. */
  private current(key: string, create: boolean): Source | undefined {
    const now = this.now();
    let source = this.sources.get(key);
    if (source && this.expired(source, now)) {
      // A new window: counts start again; what was not recorded yet still goes into a summary.
      source.windowStart = now;
      source.failures = 0;
      source.lockedUntil = 0;
      source.recorded = 0;
    }
    if (!source && create) {
      if (this.sources.size >= this.limits.maxSources) this.evictOldest();
      source = { windowStart: now, failures: 0, lockedUntil: 0, recorded: 0, unrecorded: new Map() };
      this.sources.set(key, source);
    }
    return source;
  }

  private evictOldest(): void {
    const first = this.sources.keys().next();
    if (first.done) return;
    const source = this.sources.get(first.value)!;
    this.evicted.push(...source.unrecorded.values());
    this.sources.delete(first.value);
  }
}

/** The unit a limit applies to: an IPv4 address (IPv4-mapped IPv6 too), or an IPv6 /64. */
export function sourceKey(addr: string): string {
  const bare = addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr;
  if (isIP(bare) !== 6) return bare;
  return `${expandIpv6(bare).slice(0, 4).join(':')}::/64`;
}

function expandIpv6(addr: string): string[] {
  const [head, tail] = addr.split('%')[0]!.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const fill = tail === undefined ? [] : Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0');
  return [...left, ...fill, ...right].map((g) => (g.includes('.') ? g : g.toLowerCase().replace(/^0+(?=.)/, '')));
}
