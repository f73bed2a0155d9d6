// Announces each new approval request and each decision with a JSON POST to a configured URL, so
// that a chat tool can relay it to the people who decide. Fire and forget: a webhook that is slow
// or down delays and blocks nothing (it is logged); decisions are taken through the API.
import type { Logger } from 'pino';
import type { ApprovalRow } from '../store/types.ts';
import { approvalView } from './approval-service.ts';

export class ApprovalWebhook {
  private readonly url: string;
  private readonly log: Logger;
  private readonly timeoutMs: number;

  constructor(url: string, log: Logger, timeoutMs = 5000) {
    this.url = url;
    this.log = log;
    this.timeoutMs = timeoutMs;
  }

  send(event: 'approval.requested' | 'approval.decided', row: ApprovalRow): void {
    const body = JSON.stringify({ event, approval: approvalView(row), hint: event === 'approval.requested' ? `gatehouse approvals approve ${row.id}` : undefined });
    fetch(this.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(this.timeoutMs) })
      .then((res) => { if (!res.ok) this.log.warn({ event, approval: row.id, status: res.status }, 'approval webhook refused the notification'); },
        (err: unknown) => this.log.warn({ event, approval: row.id, err: (err as Error).message }, 'approval webhook unreachable'));
  }
}
