import net from 'node:net';
import tls from 'node:tls';
import type { Engine, EngineContext } from '../engine.ts';
import type { ListenAddress } from '../../util/address.ts';
import { CancelRegistry } from './cancel-registry.ts';
import { PgClientSession, type PgEngineOptions } from './client-session.ts';
import { UpstreamPool, type PoolOptions } from './upstream/pool.ts';
import { loadSqlParser } from './prepared-names.ts';
import { CatalogLookups } from './upstream/catalog.ts';
import { DEFAULT_RECORDED_TEXT_BYTES } from './recorded-text.ts';

export const DEFAULT_PG_OPTIONS: PgEngineOptions = {
  authTimeoutMs: 30_000,
  upstreamTimeoutMs: 10_000,
  maxClientMessageBytes: 64 * 1024 * 1024,
  maxServerMessageBytes: 64 * 1024 * 1024,
  paramBytes: 4096,
  recordedTextBytes: DEFAULT_RECORDED_TEXT_BYTES,
  allowLoopbackCleartext: true,
};

/** PostgreSQL wire-protocol engine: a native listener that libpq clients connect to unchanged. */
export class PostgresEngine implements Engine {
  readonly protocol = 'postgres';
  private readonly ctx: EngineContext;
  private readonly options: PgEngineOptions;
  private readonly pool: UpstreamPool;
  private readonly cancels = new CancelRegistry();
  private readonly secureContext: tls.SecureContext;
  private readonly saltedCache = new Map<string, Buffer>();
  private readonly catalog: CatalogLookups;
  private readonly sessions = new Set<PgClientSession>();
  private readonly running = new Set<Promise<void>>();
  private server: net.Server | null = null;

  constructor(ctx: EngineContext, options: Partial<PgEngineOptions> = {}, poolOptions: Partial<PoolOptions> = {}) {
    this.ctx = ctx;
    this.options = { ...DEFAULT_PG_OPTIONS, ...options };
    this.pool = new UpstreamPool(poolOptions, ctx.log);
    this.catalog = new CatalogLookups(ctx.log);
    this.secureContext = tls.createSecureContext({ cert: ctx.tls.cert, key: ctx.tls.key, minVersion: 'TLSv1.2' });
  }

  async listen(address: ListenAddress): Promise<ListenAddress> {
    await loadSqlParser(); // the tracker reads PREPARE / DEALLOCATE with it, synchronously
    const server = net.createServer({ noDelay: true, pauseOnConnect: false }, (socket) => this.accept(socket));
    this.server = server;
    server.on('error', (err) => this.ctx.log.error({ err: err.message }, 'postgres listener error'));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(address.port, address.host, () => {
        server.off('error', reject);
        const bound = server.address() as net.AddressInfo;
        this.ctx.log.info({ address: `${bound.address}:${bound.port}` }, 'postgres listener ready');
        resolve({ host: bound.address, port: bound.port });
      });
    });
  }

  private accept(socket: net.Socket): void {
    socket.on('error', () => {}); // errors surface through the session's own handling
    const session = new PgClientSession(socket, {
      ctx: this.ctx, options: this.options, pool: this.pool, cancels: this.cancels,
      secureContext: this.secureContext, saltedCache: this.saltedCache, catalog: this.catalog,
    });
    this.sessions.add(session);
    const run = session.run()
      .catch((err: unknown) => { this.ctx.log.error({ err: (err as Error).message }, 'postgres session crashed'); socket.destroy(); })
      .finally(() => { this.sessions.delete(session); this.running.delete(run); });
    this.running.add(run);
  }

  connectionChanged(connectionId: string): void {
    this.pool.drain(connectionId);
    this.catalog.drain(connectionId);
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const s of this.sessions) s.stop('gateway shutting down');
    await Promise.allSettled([...this.running]);
    this.pool.close();
    this.catalog.close();
    await closed;
  }
}
