// Holding for approval: an action a policy rule holds waits in its session while people decide.
// The request is stored (every gateway sharing the store sees it; any may take the decision), the
// holding gateway learns the decision at once when it is taken here and within a second when it is
// taken elsewhere, and the request ends exactly once — approved, denied, expired or withdrawn (the
// client cancelled or went away) — by a compare-and-set on its status. No identity approves its
// own request; approvers need the approve grant on the connection, or to be named by the rule.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { AccessService } from '../access/access-service.ts';
import { decide as decideAccess, type AccessSubject } from '../access/access-policy.ts';
import type { ApprovalRow, ApprovalStatus, Identity, Store } from '../store/types.ts';
import type { PolicyAction, Verdict } from '../policy/types.ts';
import { newId } from '../util/ids.ts';
import { UserError } from '../identity/identity-service.ts';
import type { ApprovalWebhook } from './webhook.ts';
import { maskEventData } from '../masking/event-masking.ts';

export type HoldOutcome =
  | { kind: 'approved'; by: string[] }
  | { kind: 'denied'; by: string; reason: string }
  | { kind: 'expired'; afterMs: number }
  | { kind: 'withdrawn'; reason: string }
  /** The request could not be stored: nobody could approve it, so it is refused. */
  | { kind: 'failed'; reason: string };

export interface HoldRequest {
  sessionId: string;
  requester: Pick<Identity, 'id' | 'name' | 'kind' | 'claims'>;
  connection: { id: string; name: string };
  protocol: string;
  verdict: Verdict;
  action: PolicyAction;
}

export interface Hold {
  id: string;
  expiresAt: number;
  outcome: Promise<HoldOutcome>;
  /** The client cancelled or disconnected: the request ends, nothing is forwarded. */
  withdraw(reason: string): void;
}

interface Decision { by: string; decision: 'approve' | 'deny'; reason: string | null; at: number }

interface LocalHold { row: ApprovalRow; resolve(o: HoldOutcome): void; timer: NodeJS.Timeout; settled: boolean }

const POLL_MS = 1000;

/** The protocol of a just-in-time access request (it holds no session's action). */
export const ACCESS_REQUEST = 'access';
const ACCESS_REQUEST_LIFETIME_MS = 24 * 3600_000;

export class ApprovalService {
  private readonly store: Store;
  private readonly access: AccessService;
  private readonly gatewayId: string;
  private readonly log: Logger;
  private readonly webhook: ApprovalWebhook | null;
  private readonly local = new Map<string, LocalHold>();
  private poller: NodeJS.Timeout | null = null;
  /** 'change' whenever a request is made or ends here (the console's live inbox listens). */
  readonly changes = new EventEmitter();

  constructor(o: { store: Store; access: AccessService; gatewayId: string; log: Logger; webhook?: ApprovalWebhook | null }) {
    this.store = o.store;
    this.access = o.access;
    this.gatewayId = o.gatewayId;
    this.log = o.log;
    this.webhook = o.webhook ?? null;
    this.changes.setMaxListeners(0); // one per open console inbox
  }

  /** Stores the request and returns at once; `outcome` settles when it is decided, expires or is withdrawn. */
  hold(req: HoldRequest): Hold {
    const terms = req.verdict.hold ?? { approvers: { groups: [], identities: [] }, quorum: 1, timeoutMs: 5 * 60_000 };
    const now = Date.now();
    const row: ApprovalRow = {
      id: newId('apr'), status: 'pending', gatewayId: this.gatewayId, sessionId: req.sessionId,
      requesterId: req.requester.id, requesterName: req.requester.name, requesterKind: req.requester.kind, requesterClaims: req.requester.claims ?? null,
      connectionId: req.connection.id, connectionName: req.connection.name, protocol: req.protocol,
      // Stored, shown to approvers and announced: masked as recorded events are (nothing secret in the store).
      rule: req.verdict.rule ?? '', policyVersion: req.verdict.policyVersion, action: JSON.stringify(maskEventData('approval.action', req.action)),
      approvers: JSON.stringify(terms.approvers), quorum: terms.quorum, decisions: '[]', reason: null,
      createdAt: now, expiresAt: now + terms.timeoutMs, decidedAt: null,
    };
    let resolve!: (o: HoldOutcome) => void;
    const outcome = new Promise<HoldOutcome>((r) => { resolve = r; });
    const entry: LocalHold = {
      row, settled: false,
      resolve: (o) => {
        if (entry.settled) return;
        entry.settled = true;
        clearTimeout(entry.timer);
        this.local.delete(row.id);
        resolve(o);
      },
      timer: setTimeout(() => { void this.end(row.id, 'expired', `not decided within ${terms.timeoutMs / 1000}s`); }, terms.timeoutMs),
    };
    entry.timer.unref();
    this.local.set(row.id, entry);
    this.store.createApproval(row).then(() => {
      this.webhook?.send('approval.requested', row);
      this.changes.emit('change');
      this.startPolling();
    }, (err: unknown) => {
      this.log.error({ approval: row.id, err: (err as Error).message }, 'could not store an approval request; the action is refused');
      entry.resolve({ kind: 'failed', reason: 'the approval request could not be recorded' });
    });
    return { id: row.id, expiresAt: row.expiresAt, outcome, withdraw: (why) => { void this.end(row.id, 'withdrawn', why); } };
  }

  /**
   * Just-in-time access: `requester` asks for a connect grant on `connection` for `seconds`. Approved
   * like a held action, it becomes a grant that ends by itself; the request itself lapses after a day.
   */
  async requestAccess(requester: Identity, connection: { id: string; name: string }, seconds: number, reason: string): Promise<ApprovalRow> {
    const now = Date.now();
    const row: ApprovalRow = {
      id: newId('apr'), status: 'pending', gatewayId: this.gatewayId, sessionId: '',
      requesterId: requester.id, requesterName: requester.name, requesterKind: requester.kind, requesterClaims: requester.claims ?? null,
      connectionId: connection.id, connectionName: connection.name, protocol: ACCESS_REQUEST, rule: '', policyVersion: 0,
      action: JSON.stringify({ kind: 'access', connection: connection.name, seconds, reason }),
      approvers: JSON.stringify({ groups: [], identities: [] }), quorum: 1, decisions: '[]', reason: null,
      createdAt: now, expiresAt: now + ACCESS_REQUEST_LIFETIME_MS, decidedAt: null,
    };
    await this.store.createApproval(row);
    this.webhook?.send('approval.requested', row);
    this.changes.emit('change');
    return row;
  }

  /** The requests `requester` made (newest first), whatever became of them. */
  async madeBy(requester: Identity, limit = 50): Promise<ApprovalRow[]> {
    return (await this.store.listApprovals({ limit: 1000 })).filter((a) => a.requesterId === requester.id).slice(0, limit);
  }

  /** Pending requests `viewer` may decide (administrators: all pending requests). */
  async pendingFor(viewer: Identity): Promise<ApprovalRow[]> {
    const now = Date.now();
    const pending = (await this.store.listApprovals({ status: 'pending' })).filter((a) => a.expiresAt > now);
    const subject = await this.access.subjectOf(viewer);
    if (decideAccess(subject, 'admin', null).allowed) return pending;
    return pending.filter((a) => this.mayDecide(subject, a));
  }

  async decide(id: string, approver: Identity, decision: 'approve' | 'deny', reason: string | null): Promise<ApprovalRow> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const a = await this.store.getApproval(id);
      if (!a) throw new UserError(`approval request "${id}" does not exist`, 404);
      if (a.status !== 'pending') throw new UserError(`approval request ${id} is already ${a.status}`, 409);
      if (a.expiresAt <= Date.now()) {
        await this.store.updateApproval(id, 'pending', { status: 'expired', decisions: a.decisions, reason: 'not decided in time', decidedAt: Date.now() });
        this.settleLocal({ ...a, status: 'expired' });
        throw new UserError(`approval request ${id} is already expired`, 409);
      }
      if (a.requesterId === approver.id) throw new UserError('no identity may approve or deny its own request', 403);
      if (!this.mayDecide(await this.access.subjectOf(approver), a)) {
        throw new UserError(`identity "${approver.name}" may not decide requests on connection "${a.connectionName}": it needs the approve grant there${a.rule ? ` or to be an approver named by rule "${a.rule}"` : ''}`, 403);
      }
      const decisions = JSON.parse(a.decisions) as Decision[];
      if (decisions.some((d) => d.by === approver.name)) throw new UserError(`identity "${approver.name}" has already approved request ${id}`, 409);
      decisions.push({ by: approver.name, decision, reason, at: Date.now() });
      const approvals = decisions.filter((d) => d.decision === 'approve').length;
      const status: ApprovalStatus = decision === 'deny' ? 'denied' : approvals >= a.quorum ? 'approved' : 'pending';
      const next = { status, decisions: JSON.stringify(decisions), reason: decision === 'deny' ? reason : a.reason, decidedAt: status === 'pending' ? null : Date.now() };
      if (!(await this.store.updateApproval(id, 'pending', next))) continue; // someone else decided meanwhile: look again
      const updated = { ...a, ...next };
      if (status === 'approved' && a.protocol === ACCESS_REQUEST) {
        const { seconds } = JSON.parse(a.action) as { seconds: number };
        const now = Date.now();
        await this.store.addTemporaryConnectGrant(a.requesterId, a.connectionId, now + seconds * 1000, newId('grant'), now);
        this.log.info({ approval: id, identity: a.requesterName, connection: a.connectionName, seconds }, 'just-in-time access granted');
      }
      if (status !== 'pending') {
        this.webhook?.send('approval.decided', updated);
        this.settleLocal(updated);
      }
      this.changes.emit('change');
      return updated;
    }
    throw new UserError(`approval request ${id} changed while it was being decided; try again`, 409);
  }

  /** Withdraws every request this gateway holds (shutdown). */
  close(): void {
    if (this.poller) clearInterval(this.poller);
    this.poller = null;
    for (const id of [...this.local.keys()]) void this.end(id, 'withdrawn', 'the gateway is shutting down');
  }

  /** `subject`: the approver's groups and grants, loaded once by the caller (a list may hold many requests). */
  private mayDecide(subject: AccessSubject, a: ApprovalRow): boolean {
    if (subject.identity.id === a.requesterId) return false;
    const named = JSON.parse(a.approvers) as { groups: string[]; identities: string[] };
    if (named.identities.includes(subject.identity.name)) return true;
    if (named.groups.some((g) => subject.groups.some((x) => x.name === g))) return true;
    return decideAccess(subject, 'approve', { id: a.connectionId, name: a.connectionName }).allowed;
  }

  /** Ends a pending request without a person's decision (timeout, withdrawal); the first end wins. */
  private async end(id: string, status: 'expired' | 'withdrawn', reason: string): Promise<void> {
    const entry = this.local.get(id);
    const outcome: HoldOutcome = status === 'expired' ? { kind: 'expired', afterMs: (entry?.row.expiresAt ?? 0) - (entry?.row.createdAt ?? 0) } : { kind: 'withdrawn', reason };
    try {
      const ended = await this.store.updateApproval(id, 'pending', { status, decisions: entry?.row.decisions ?? '[]', reason, decidedAt: Date.now() });
      if (!ended) {
        // Decided meanwhile (here or at another gateway): that decision stands.
        const row = await this.store.getApproval(id);
        if (row) this.settleLocal(row);
        else entry?.resolve(outcome); // never stored (its write failed or is still on its way)
        return;
      }
      if (entry) this.webhook?.send('approval.decided', { ...entry.row, status, reason, decidedAt: Date.now() });
      this.changes.emit('change');
    } catch (err) {
      this.log.error({ approval: id, err: (err as Error).message }, 'could not record the end of an approval request');
    }
    entry?.resolve(outcome);
  }

  private settleLocal(row: ApprovalRow): void {
    const entry = this.local.get(row.id);
    if (!entry) return;
    const decisions = JSON.parse(row.decisions) as Decision[];
    switch (row.status) {
      case 'approved': entry.resolve({ kind: 'approved', by: decisions.filter((d) => d.decision === 'approve').map((d) => d.by) }); break;
      case 'denied': {
        const d = decisions.find((x) => x.decision === 'deny');
        entry.resolve({ kind: 'denied', by: d?.by ?? '?', reason: row.reason ?? '' });
        break;
      }
      case 'expired': entry.resolve({ kind: 'expired', afterMs: row.expiresAt - row.createdAt }); break;
      case 'withdrawn': entry.resolve({ kind: 'withdrawn', reason: row.reason ?? '' }); break;
      default: break;
    }
  }

  /** Decisions taken at other gateways reach the holding one by polling its own pending requests. */
  private startPolling(): void {
    if (this.poller) return;
    this.poller = setInterval(() => {
      if (this.local.size === 0) {
        clearInterval(this.poller!);
        this.poller = null;
        return;
      }
      for (const id of this.local.keys()) {
        this.store.getApproval(id).then((row) => { if (row && row.status !== 'pending') this.settleLocal(row); }, () => undefined);
      }
    }, POLL_MS);
    this.poller.unref();
  }
}

/** What a person reads about a request (CLI, API, webhook): never a credential. */
export function approvalView(a: ApprovalRow) {
  return {
    id: a.id, status: a.status, requester: { name: a.requesterName, kind: a.requesterKind, claims: a.requesterClaims },
    session: a.sessionId, connection: a.connectionName, protocol: a.protocol, rule: a.rule, policyVersion: a.policyVersion,
    action: JSON.parse(a.action) as unknown, quorum: a.quorum, approvers: JSON.parse(a.approvers) as unknown, decisions: JSON.parse(a.decisions) as unknown,
    reason: a.reason, createdAt: new Date(a.createdAt).toISOString(), expiresAt: new Date(a.expiresAt).toISOString(),
    decidedAt: a.decidedAt === null ? null : new Date(a.decidedAt).toISOString(),
  };
}
