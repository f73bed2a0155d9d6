// The gateway's lease on its open sessions in a store that several gateways share. Every
// heartbeat the lease is renewed; sessions of this gateway that another gateway owns now (it took
// them over while this one's lease had lapsed: a stall, a network partition) are given up; and
// open sessions of gateways whose own lease lapsed (they died) are taken over and sealed here.
import type { Logger } from 'pino';
import type { SessionOwner, Store, TakenOverSession } from '../store/types.ts';

export interface LeaseHolder {
  /** Ids of the sessions this gateway is recording. */
  openSessionIds(): string[];
  /** Ends the recordings of sessions that another gateway took over (nothing more is written for them here). */
  surrender(lost: SessionOwner[]): void;
  /** Seals sessions this gateway has taken over, as interrupted; returns those it could not read yet. */
  sealTakenOver(taken: TakenOverSession[]): Promise<TakenOverSession[]>;
}

export interface LeaseOptions {
  gatewayId: string;
  /** A gateway that has not renewed its lease for this long is taken for dead. */
  leaseMs: number;
  heartbeatMs: number;
}

export class GatewayLease {
  private readonly store: Store;
  private readonly holder: LeaseHolder;
  private readonly log: Logger;
  private readonly options: LeaseOptions;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  /** performance.now() of the last renewal the store confirmed. */
  private renewedAt = performance.now();
  private lapseReported = false;
  /** Sessions taken over whose recordings could not be read yet: sealed at a later heartbeat. */
  private unsealed: TakenOverSession[] = [];

  constructor(store: Store, holder: LeaseHolder, log: Logger, options: LeaseOptions) {
    this.store = store;
    this.holder = holder;
    this.log = log;
    this.options = options;
  }

  /** Call once the lease was started (store.startGatewayLease). */
  start(): void {
    this.renewedAt = performance.now();
    this.timer = setInterval(() => { void this.heartbeat(); }, this.options.heartbeatMs);
    this.timer.unref();
  }

  /** Stops the heartbeat and waits for one in progress. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One heartbeat (or the one in progress). */
  heartbeat(): Promise<void> {
    this.running ??= this.beat().finally(() => { this.running = null; });
    return this.running;
  }

  /** Renews the lease, gives up sessions taken over, takes over lapsed gateways' sessions; each step is tried again next time when it fails. */
  private async beat(): Promise<void> {
    const { gatewayId, leaseMs } = this.options;
    const since = performance.now() - this.renewedAt;
    try {
      await this.store.renewGatewayLease(gatewayId);
      if (since > leaseMs) {
        // The lease lapsed meanwhile: other gateways may have sealed sessions of this one. Those
        // are found below (or by their next write) and ended here.
        this.log.error({ gateway: gatewayId, unrenewedMs: Math.round(since) }, 'the gateway lease had lapsed; sessions another gateway took over meanwhile are ended');
      }
      this.renewedAt = performance.now();
      this.lapseReported = false;
    } catch (err) {
      if (since > leaseMs && !this.lapseReported) {
        this.lapseReported = true;
        this.log.error({ gateway: gatewayId, err: (err as Error).message }, 'the gateway lease has lapsed: other gateways may take over and seal its open sessions');
      } else {
        this.log.warn({ gateway: gatewayId, err: (err as Error).message }, 'could not renew the gateway lease');
      }
      return;
    }
    try {
      const lost = await this.store.sessionsOwnedElsewhere(gatewayId, this.holder.openSessionIds());
      if (lost.length > 0) this.holder.surrender(lost);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not check the ownership of open sessions');
    }
    try {
      const taken = await this.store.takeOverSessions(gatewayId, { leaseMs, own: false });
      if (taken.length > 0) {
        this.log.warn({ sessions: taken.length, from: [...new Set(taken.map((t) => t.previousOwner))] }, 'sealing open sessions of gateways whose lease expired');
      }
      this.unsealed.push(...taken);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'could not take over the sessions of gateways whose lease expired');
    }
    // Taken over (now or earlier) and owned by this gateway: nobody else will seal them.
    if (this.unsealed.length > 0) this.unsealed = await this.holder.sealTakenOver(this.unsealed.splice(0));
  }
}
