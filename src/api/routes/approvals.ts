// Approval requests: an approver lists the pending requests it may decide and approves or denies
// them; the holding session goes on (or is refused) as soon as the request is decided.
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { approvalView } from '../../approvals/approval-service.ts';
import { UserError } from '../../identity/identity-service.ts';
import { requestToken } from '../auth.ts';

/** Longest just-in-time access one request may ask for. */
const MAX_ACCESS_SECONDS = 7 * 86_400;

const ID = '^apr_[A-Za-z0-9_-]{1,64}$';

export async function approvalRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.get('/api/v1/approvals', async (req) => (await deps.approvals.pendingFor(req.identity!)).map(approvalView));

  // The requests the caller made, whatever became of them (a requester sees its decision arrive).
  app.get('/api/v1/approvals/mine', async (req) => (await deps.approvals.madeBy(req.identity!)).map(approvalView));

  // Live: Server-Sent Events, one `approvals` event with { pending, mine } now and after every
  // change (made or decided here at once; at another gateway sharing the store, within 5 s);
  // `revoked` and the end once the token it was opened with is no longer valid.
  // Open streams end when the API closes (an open one kept the gateway from stopping until it was killed).
  const streams = new Set<import('node:http').ServerResponse>();
  app.addHook('preClose', async () => { for (const res of streams) res.end(); });
  app.get('/api/v1/approvals/events', async (req, reply) => {
    const identity = req.identity!;
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no', connection: 'close' });
    streams.add(res);
    let last = '';
    let busy = false;
    let again = false;
    const push = async () => {
      if (busy) { again = true; return; }
      busy = true;
      try {
        do {
          again = false;
          const [pending, mine] = await Promise.all([deps.approvals.pendingFor(identity), deps.approvals.madeBy(identity, 20)]);
          const data = JSON.stringify({ pending: pending.map(approvalView), mine: mine.map(approvalView) });
          if (data !== last && !res.destroyed) {
            last = data;
            res.write(`event: approvals\ndata: ${data}\n\n`);
          }
        } while (again && !res.destroyed);
      } catch (err) {
        req.log.warn({ err: (err as Error).message }, 'approvals stream');
      } finally {
        busy = false;
      }
    };
    const onChange = () => void push();
    deps.approvals.changes.on('change', onChange);
    // The stream outlives the request's check: a token signed out, revoked or expired ends it.
    const token = requestToken(req);
    const timer = setInterval(() => {
      void (async () => {
        const check = token ? await deps.identity.checkToken(token).catch(() => ({ ok: false as const })) : { ok: false as const };
        if (res.destroyed) return;
        if (!check.ok) {
          res.write(`event: revoked\ndata: ${JSON.stringify({ error: 'the token this view was opened with is no longer valid (signed out, revoked or expired)' })}\n\n`);
          res.end();
          return;
        }
        await push();
        if (!res.destroyed) res.write(': keep-alive\n\n');
      })();
    }, 5000);
    res.on('close', () => { clearInterval(timer); deps.approvals.changes.off('change', onChange); streams.delete(res); });
    await push();
  });

  // Just-in-time access: any identity may ask, with its own token; approvers decide as for holds.
  app.post<{ Body: { connection: string; seconds: number; reason: string } }>('/api/v1/access/requests', {
    schema: { body: { type: 'object', required: ['connection', 'seconds', 'reason'], additionalProperties: false, properties: {
      connection: { type: 'string', minLength: 1, maxLength: 255 }, seconds: { type: 'integer', minimum: 1, maximum: MAX_ACCESS_SECONDS },
      reason: { type: 'string', minLength: 1, maxLength: 1000 } } } },
  }, async (req, reply) => {
    const connection = await deps.store.getConnectionByName(req.body.connection);
    if (!connection) throw new UserError(`connection "${req.body.connection}" does not exist`, 404);
    const row = await deps.approvals.requestAccess(req.identity!, connection, req.body.seconds, req.body.reason);
    return reply.code(201).send(approvalView(row));
  });

  for (const decision of ['approve', 'deny'] as const) {
    app.post<{ Params: { id: string }; Body: { reason?: string } }>(`/api/v1/approvals/:id/${decision}`, {
      schema: {
        params: { type: 'object', properties: { id: { type: 'string', pattern: ID } } },
        body: { type: 'object', additionalProperties: false, ...(decision === 'deny' ? { required: ['reason'] } : {}),
          properties: { reason: { type: 'string', minLength: 1, maxLength: 1000 } } },
      },
    }, async (req) => approvalView(await deps.approvals.decide(req.params.id, req.identity!, decision, req.body?.reason ?? null)));
  }
}
