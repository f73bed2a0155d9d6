import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requestToken, requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';
import { CLAIM_NAME, IDENTITY_KINDS, type EventRow, type SessionRow } from '../../store/types.ts';
import { sse, tailSession } from '../live-tail.ts';
import { runRetention } from '../../recorder/retention.ts';
import { castEvents, terminalChannels, type TerminalChannel } from '../../recorder/asciicast.ts';
import { signingKeysOf, verifyStoredSession } from '../../integrity/store-verifier.ts';
import { decide, scope } from '../../access/access-policy.ts';
import { bundleArchive, type BundleContent } from '../../integrity/bundle.ts';

export function sessionView(s: SessionRow) {
  const iso = (us: number | null) => (us === null ? null : new Date(Math.floor(us / 1000)).toISOString());
  return {
    id: s.id, protocol: s.protocol, identity: { id: s.identityId, name: s.identityName, kind: s.identityKind, claims: s.identityClaims ?? null },
    authMethod: s.authMethod ?? null,
    clientAddr: s.clientAddr, applicationName: s.applicationName, connection: s.connectionName,
    target: { host: s.targetHost, port: s.targetPort, database: s.targetDatabase, user: s.targetUser },
    startedAt: iso(s.startedAt), endedAt: iso(s.endedAt), endReason: s.endReason, eventCount: s.eventCount, recording: s.recordingMode,
    legalHold: s.legalHold === true, review: s.reviewFlags ?? [],
  };
}

export async function sessionRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const access = deps.identity.access;
  const adminOnly = { preHandler: requireAdmin(access) };

  // Reading a recording is an audit action on the session's connection (admin includes it). A
  // caller who may audit nothing is told so before anything about the session it named.
  const auditScope = async (req: FastifyRequest) => {
    const subject = await access.subjectOf(req.identity!);
    const where = scope(subject, 'audit');
    if (!where.every && where.connectionIds.length === 0) {
      throw new UserError(`identity "${req.identity!.name}" is not an administrator and has no audit grant: it may not read recordings`, 403);
    }
    return { subject, where };
  };
  const auditable = async (req: FastifyRequest, id: string): Promise<SessionRow> => {
    const { subject } = await auditScope(req);
    const session = await deps.store.getSession(id);
    if (!session) throw new UserError(`session "${id}" does not exist`, 404);
    const decision = decide(subject, 'audit', { id: session.connectionId, name: session.connectionName });
    if (!decision.allowed) throw new UserError(`may not read session "${id}": ${decision.reason}`, 403);
    return session;
  };

  app.get<{ Querystring: { identity?: string; connection?: string; kind?: string; claim?: string[]; q?: string; review?: Array<'denied' | 'held' | 'flagged' | 'lost' | 'masked'>; before?: string; limit?: number; open?: boolean;
    protocol?: string; outcome?: 'open' | 'ended' | 'refused'; from?: string; to?: string } }>('/api/v1/sessions', {
    schema: { querystring: { type: 'object', additionalProperties: false, properties: {
      identity: { type: 'string' }, connection: { type: 'string' }, kind: { type: 'string', enum: [...IDENTITY_KINDS, 'unknown'] },
      // claim=NAME=VALUE, repeatable; a single one arrives as an array too (query arrays are coerced).
      claim: { type: 'array', items: { type: 'string' }, maxItems: 20 },
      // Words from what the session ran (statements, commands, paths, refs, result samples); ended sessions.
      q: { type: 'string', maxLength: 500 },
      // Ended sessions with a denial, a hold, a flagged action or lost events (repeatable: all must hold).
      review: { type: 'array', items: { type: 'string', enum: ['denied', 'held', 'flagged', 'lost', 'masked'] }, maxItems: 5 },
      // The next page: sessions that started before this one (newest first).
      before: { type: 'string', maxLength: 100 },
      limit: { type: 'integer', minimum: 1, maximum: 10000 },
      // Only the sessions open now (however long ago they started), newest first; with identity, kind, connection.
      open: { type: 'boolean' },
      protocol: { type: 'string', enum: ['postgres', 'ssh', 'git-http'] },
      outcome: { type: 'string', enum: ['open', 'ended', 'refused'] },
      // Started at or after `from`, before `to` (ISO 8601 times with a zone, e.g. 2026-12-04T10:00:00Z).
      from: { type: 'string', format: 'date-time' }, to: { type: 'string', format: 'date-time' } } } },
  }, async (req) => {
    const { claim, q, before, review, open, from, to, ...filter } = req.query;
    // Only sessions of connections the caller may audit; the filter runs in the store so the limit holds.
    const { where } = await auditScope(req);
    const connectionIds = where.every ? undefined : where.connectionIds;
    if (open) {
      if (q || before || review?.length || claim?.length || from || to || filter.protocol || filter.outcome) throw new UserError('open=true combines only with identity, kind, connection and limit');
      const ids = connectionIds ? new Set(connectionIds) : null;
      return (await deps.store.listOpenSessions())
        .filter((s) => (!ids || ids.has(s.connectionId)) && (!filter.identity || s.identityName === filter.identity)
          && (!filter.kind || s.identityKind === filter.kind) && (!filter.connection || s.connectionName === filter.connection))
        .reverse().slice(0, filter.limit ?? 100).map(sessionView);
    }
    let cursor: { startedAt: number; id: string } | undefined;
    if (before !== undefined) {
      const s = await deps.store.getSession(before);
      if (!s) throw new UserError(`before: session "${before}" does not exist`, 400);
      cursor = { startedAt: s.startedAt, id: s.id };
    }
    const at = (iso: string | undefined): number | undefined => (iso === undefined ? undefined : Date.parse(iso) * 1000);
    return (await deps.store.listSessions({ ...filter, claims: parseClaimFilters(claim ?? []), connectionIds, startedFrom: at(from), startedTo: at(to),
      ...(q !== undefined && q.trim() !== '' ? { search: q } : {}), ...(review?.length ? { review } : {}), ...(cursor ? { before: cursor } : {}) })).map(sessionView);
  });

  const evidenceOf = async (session: SessionRow): Promise<BundleContent> => {
    const [events, checkpoints, seal, keys] = await Promise.all([
      deps.store.listEvents(session.id), deps.store.listCheckpoints(session.id), deps.store.getSeal(session.id), deps.store.listSigningKeys(),
    ]);
    const used = new Set([...checkpoints.map((c) => c.keyId), ...(seal ? [seal.keyId] : [])]);
    return {
      session: sessionView(session),
      events: events.map((e) => ({ seq: e.seq, ts: e.ts, type: e.type, data: e.data, hash: e.hash })),
      checkpoints: checkpoints.map((c) => ({ seq: c.seq, payload: c.payload, keyId: c.keyId, signature: c.signature })),
      seal: seal ? { position: seal.position, payload: seal.payload, hash: seal.hash, keyId: seal.keyId, signature: seal.signature } : null,
      keys: keys.filter((k) => used.has(k.keyId)).map((k) => ({ keyId: k.keyId, publicKeyPem: k.publicKeyPem })),
    };
  };
  // Who took a copy of a recording, and of which: in the admin audit log before the copy is sent
  // (no entry, no copy).
  const recordExport = async (req: FastifyRequest, session: SessionRow, format: string, events: number, sealed: boolean) => {
    try {
      await deps.audit.record('session.export', { actor: { name: req.identity!.name, kind: req.identity!.kind, from: req.ip }, session: session.id, connection: session.connectionName, format, events, sealed });
    } catch (err) {
      req.log.error({ err: (err as Error).message }, 'admin audit log unavailable');
      throw new UserError('the admin audit log cannot be written right now, so the recording was not exported', 503);
    }
  };

  // Everything a third party needs to verify the session offline (docs/bundle.md).
  app.get<{ Params: { id: string } }>('/api/v1/sessions/:id/evidence', async (req) => {
    const session = await auditable(req, req.params.id);
    const content = await evidenceOf(session);
    await recordExport(req, session, 'evidence.json', content.events.length, content.seal !== null);
    return content;
  });

  // The export bundle as one file (gzipped tar of the directory `gatehouse sessions export` writes):
  // `tar -xzf ID.bundle.tar.gz && gatehouse verify ID` checks it offline.
  app.get<{ Params: { id: string } }>('/api/v1/sessions/:id/bundle', {
    schema: { params: { type: 'object', properties: { id: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' } } } },
  }, async (req, reply) => {
    const session = await auditable(req, req.params.id);
    const content = await evidenceOf(session);
    const archive = bundleArchive(content);
    await recordExport(req, session, 'bundle.tar.gz', content.events.length, content.seal !== null);
    return reply.header('content-type', 'application/gzip')
      .header('content-disposition', `attachment; filename="${session.id}.bundle.tar.gz"`)
      .header('cache-control', 'no-store')
      .send(archive);
  });

  // Legal hold and retention change what is kept: management, not audit.
  app.post<{ Params: { id: string }; Body: { hold: boolean } }>('/api/v1/sessions/:id/hold', {
    ...adminOnly,
    schema: { body: { type: 'object', required: ['hold'], additionalProperties: false, properties: { hold: { type: 'boolean' } } } },
  }, async (req) => {
    if (!(await deps.store.setLegalHold(req.params.id, req.body.hold))) throw new UserError(`session "${req.params.id}" does not exist`, 404);
    return { id: req.params.id, legalHold: req.body.hold };
  });

  app.post('/api/v1/retention/run', adminOnly, async () => runRetention(deps.store, deps.recorder, deps.log));

  // Ends an open session (the client gets its protocol's goodbye); resolves once it has ended.
  app.post<{ Params: { id: string } }>('/api/v1/sessions/:id/kill', adminOnly, async (req) => {
    const reason = `ended by administrator ${req.identity!.name}`;
    if (await deps.sessions.kill(req.params.id, reason)) return { id: req.params.id, killed: true, reason, ended: !deps.sessions.isOpen(req.params.id) };
    const session = await deps.store.getSession(req.params.id);
    if (!session) throw new UserError(`session "${req.params.id}" does not exist`, 404);
    if (session.endedAt !== null) throw new UserError(`session "${req.params.id}" has ended already (${session.endReason ?? 'no reason recorded'})`, 409);
    throw new UserError(`session "${req.params.id}" is not open on this gateway (it may be open on another gateway sharing the store)`, 409);
  });

  // The session's record checked as `gatehouse verify --store` checks it: chain, checkpoints, seal,
  // and the row against what they vouch for — against the signing keys in the store (an
  // independent check uses the gateway's key files: `gatehouse verify`).
  app.get<{ Params: { id: string } }>('/api/v1/sessions/:id/verify', async (req) => {
    const session = await auditable(req, req.params.id);
    const { keys, problems } = await signingKeysOf(deps.store);
    const r = await verifyStoredSession(deps.store, session, keys);
    const o = r.outcome;
    return {
      ok: r.ok && problems.length === 0, ...(r.ok ? {} : { problem: r.problem }), ...(problems.length ? { keyProblems: problems } : {}),
      open: r.ok ? r.open : session.endedAt === null, sealed: o?.sealed ?? false, events: o?.events ?? 0, checkpoints: o?.checkpoints ?? 0,
      keyIds: o?.keyIds ?? [], ...(o?.gaps?.length ? { gaps: o.gaps } : {}), trust: 'signing keys in the store',
    };
  });

  // The session's terminals (shells, commands with a pty) as asciicast v2, for a player.
  app.get<{ Params: { id: string } }>('/api/v1/sessions/:id/terminals', async (req) => {
    const session = await auditable(req, req.params.id);
    const events = (await deps.store.listEvents(session.id)).map((e) => ({ ts: e.ts, type: e.type, data: JSON.parse(e.data) as Record<string, unknown> }));
    return terminalChannels(events).map((ch) => ({
      channel: ch.channel, command: ch.command ?? null, width: ch.width || 80, height: ch.height || 24, // a pty of 0×0 (ssh -tt from a pipe)
      startedAt: new Date(Math.floor(ch.startedAt / 1000)).toISOString(),
      // Output only: what the person saw (input is in the timeline, and echoes anyway).
      events: castEvents(events, ch).filter((e) => e.code !== 'i').map((e) => [e.time, e.code, e.data]),
    }));
  });

  // Live: the session as it is recorded (Server-Sent Events). `events` frames carry event views
  // (as GET /api/v1/sessions/:id has them) but for terminal streams (term.*: the terminal's own
  // stream below carries the output; typed input is left out, as in the terminals): the first
  // with what is recorded so far (its channels, and the last 1,000 of the rest), then each part as
  // it is written; `ended` carries the session once it has ended, and the stream closes.
  const streams = new Set<import('node:http').ServerResponse>();
  app.addHook('preClose', async () => { for (const res of streams) res.end(); });
  // A stream outlives its request's checks: the token and the grant are asked again while it runs.
  const stillAuditable = (req: FastifyRequest, session: SessionRow) => async (): Promise<string | null> => {
    const token = requestToken(req);
    const check = token ? await deps.identity.checkToken(token) : { ok: false as const };
    if (!check.ok) return 'the token this view was opened with is no longer valid (signed out, revoked or expired)';
    const decision = decide(await access.subjectOf(check.identity), 'audit', { id: session.connectionId, name: session.connectionName });
    return decision.allowed ? null : `may no longer read session "${session.id}": ${decision.reason}`;
  };
  // Frames are built from the stored JSON as it is (no parse and re-serialise per viewer); a
  // stored text with a line break (which JSON.stringify never writes) would end an SSE line, so
  // it goes through JSON again.
  const eventJson = (e: EventRow): string => (/[\r\n]/.test(e.data) ? JSON.stringify(eventView(e))
    : `{"seq":${e.seq},"ts":${JSON.stringify(new Date(Math.floor(e.ts / 1000)).toISOString())},"tsUs":${e.ts},"type":${JSON.stringify(e.type)},"data":${e.data}}`);
  const eventsFrame = (rows: EventRow[]): string => (rows.length ? `event: events\ndata: [${rows.map(eventJson).join(',')}]\n\n` : '');
  const CHANNEL = new Set(['session.start', 'ssh.shell', 'ssh.exec']);
  const backlog = (rows: EventRow[]) => {
    const rest = new Set(rows.filter((e) => !e.type.startsWith('term.') && !CHANNEL.has(e.type)).slice(-1000));
    return rows.filter((e) => rest.has(e) || CHANNEL.has(e.type));
  };
  app.get<{ Params: { id: string } }>('/api/v1/sessions/:id/stream', async (req, reply) => {
    const session = await auditable(req, req.params.id);
    await tailSession(req, reply, {
      store: deps.store, written: deps.written, session, open: streams, stillAllowed: stillAuditable(req, session),
      // The first frame even when empty: the viewer knows the stream is up.
      backlog: (rows) => { const b = backlog(rows); return b.length ? eventsFrame(b) : sse('events', []); },
      more: (rows) => eventsFrame(rows.filter((e) => !e.type.startsWith('term.'))),
      ended: (s) => sse('ended', sessionView(s)),
    });
  });

  // One terminal channel live, in the stream format of asciinema-player's eventsource driver: a
  // reset with the terminal's size and what it showed so far, then [seconds, "o", text] output
  // (and "r" resizes) as it is recorded, then `done`.
  app.get<{ Params: { id: string; channel: number } }>('/api/v1/sessions/:id/terminals/:channel/stream', {
    schema: { params: { type: 'object', properties: { id: { type: 'string' }, channel: { type: 'integer', minimum: 0 } } } },
  }, async (req, reply) => {
    const session = await auditable(req, req.params.id);
    // Only what a terminal is made of is read (statements and results pass by unparsed).
    const parse = (rows: EventRow[]) => rows.filter((e) => e.type.startsWith('term.') || e.type === 'ssh.shell' || e.type === 'ssh.exec')
      .map((e) => ({ ts: e.ts, type: e.type, data: JSON.parse(e.data) as Record<string, unknown> }));
    let channel: TerminalChannel | undefined;
    const frames = (rows: EventRow[]): string => {
      const events = parse(rows);
      let out = '';
      if (!channel) {
        channel = terminalChannels(events).find((c) => c.channel === req.params.channel);
        if (!channel) return '';
        const before = castEvents(events, channel).filter((e) => e.code === 'o').map((e) => e.data).join('');
        const sizeOf = (c: TerminalChannel) => ({ cols: c.width || 80, rows: c.height || 24 });
        out += sse(null, { ...sizeOf(channel), time: Math.max(0, (Date.now() * 1000 - channel.startedAt) / 1e6), init: before.slice(-512 * 1024) });
        return out;
      }
      for (const e of castEvents(events, channel)) if (e.code !== 'i') out += sse(null, [e.time, e.code, e.data]);
      return out;
    };
    await tailSession(req, reply, {
      store: deps.store, written: deps.written, session, open: streams, stillAllowed: stillAuditable(req, session),
      backlog: frames, more: frames, ended: () => 'event: done\ndata: {}\n\n',
    });
  });

  app.get<{ Params: { id: string } }>('/api/v1/sessions/:id', async (req) => {
    const session = await auditable(req, req.params.id);
    const events = await deps.store.listEvents(session.id);
    return {
      session: sessionView(session),
      events: events.map(eventView),
    };
  });
}

export function eventView(e: EventRow) {
  return { seq: e.seq, ts: new Date(Math.floor(e.ts / 1000)).toISOString(), tsUs: e.ts, type: e.type, data: JSON.parse(e.data) as unknown };
}

/** "repository=org/app" → { repository: "org/app" }; the value may itself hold "=". */
export function parseClaimFilters(items: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    if (eq < 0 || !CLAIM_NAME.test(name)) throw new UserError(`claim filter "${item}" must be NAME=VALUE (name: letters, digits, _ . : -)`);
    out[name] = item.slice(eq + 1);
  }
  return out;
}
