// Keeps logged-in upstream sessions for reuse, as PgBouncer's session mode does: a client
// session gets a backend to itself, and when it ends the backend is reset (ROLLBACK if needed,
// then DISCARD ALL) before the next client gets it. Reuse is only within one pool key, which
// includes the connection and every startup parameter the client chose, because DISCARD ALL
// restores a backend to its startup values, not to the gateway's defaults.
import type { Logger } from 'pino';
import type { UpstreamConnection } from './login.ts';
import { simpleQuery } from './simple-query.ts';

export interface PoolOptions {
  maxIdlePerKey: number;
  idleTimeoutMs: number;
  maxLifetimeMs: number;
  resetTimeoutMs: number;
}

export const DEFAULT_POOL_OPTIONS: PoolOptions = { maxIdlePerKey: 32, idleTimeoutMs: 60_000, maxLifetimeMs: 30 * 60_000, resetTimeoutMs: 5_000 };

interface Idle { conn: UpstreamConnection; since: number; unwatch: () => void }

export class UpstreamPool {
  private readonly idle = new Map<string, Idle[]>();
  private readonly options: PoolOptions;
  private readonly log: Logger;
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(options: Partial<PoolOptions>, log: Logger) {
    this.options = { ...DEFAULT_POOL_OPTIONS, ...options };
    this.log = log;
    this.sweeper = setInterval(() => this.sweep(), Math.min(10_000, this.options.idleTimeoutMs)).unref();
  }

  static key(connectionId: string, startupParams: Record<string, string>): string {
    const parts = Object.keys(startupParams).sort().map((k) => `${k}=${startupParams[k]}`);
    return `${connectionId}\0${parts.join('\0')}`;
  }

  take(key: string): UpstreamConnection | undefined {
    const list = this.idle.get(key);
    while (list && list.length > 0) {
      const entry = list.pop()!;
      entry.unwatch();
      if (!entry.conn.stream.destroyed) return entry.conn;
    }
    return undefined;
  }

  /** Resets the backend and keeps it; any doubt about its state destroys it instead. */
  async release(key: string, conn: UpstreamConnection): Promise<boolean> {
    if (this.closed || Date.now() - conn.createdAt > this.options.maxLifetimeMs || (this.idle.get(key)?.length ?? 0) >= this.options.maxIdlePerKey) {
      conn.stream.destroy();
      return false;
    }
    try {
      if (conn.txStatus !== 0x49) await this.run(conn, 'ROLLBACK');
      await this.run(conn, 'DISCARD ALL');
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'upstream reset failed; closing it');
      conn.stream.destroy();
      return false;
    }
    if (this.closed || conn.stream.destroyed) { conn.stream.destroy(); return false; }
    let list = this.idle.get(key);
    if (!list) { list = []; this.idle.set(key, list); }
    const entry: Idle = { conn, since: Date.now(), unwatch: () => {} };
    // An idle backend must stay silent; anything it says (shutdown notice, EOF) retires it.
    const retire = (): void => { this.remove(key, entry); conn.stream.destroy(); };
    conn.stream.on('data', retire);
    conn.stream.on('close', retire);
    conn.stream.on('error', retire);
    entry.unwatch = () => {
      conn.stream.off('data', retire);
      conn.stream.off('close', retire);
      conn.stream.off('error', retire);
      conn.stream.pause();
    };
    list.push(entry);
    return true;
  }

  private async run(conn: UpstreamConnection, sql: string): Promise<void> {
    await simpleQuery(conn, sql, this.options.resetTimeoutMs);
  }

  private remove(key: string, entry: Idle): void {
    const list = this.idle.get(key);
    const i = list?.indexOf(entry) ?? -1;
    if (list && i >= 0) {
      list.splice(i, 1);
      entry.unwatch();
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const [key, list] of this.idle) {
      for (const entry of [...list]) {
        if (now - entry.since > this.options.idleTimeoutMs || now - entry.conn.createdAt > this.options.maxLifetimeMs) {
          this.remove(key, entry);
          entry.conn.stream.destroy();
        }
      }
      if (list.length === 0) this.idle.delete(key);
    }
  }

  /** Drops every idle backend of one connection (after it is removed or changed). */
  drain(connectionId: string): void {
    for (const [key, list] of this.idle) {
      if (!key.startsWith(connectionId + '\0')) continue;
      for (const entry of [...list]) { this.remove(key, entry); entry.conn.stream.destroy(); }
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const [key, list] of this.idle) for (const entry of [...list]) { this.remove(key, entry); entry.conn.stream.destroy(); }
    this.idle.clear();
  }
}
