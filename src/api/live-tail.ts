// Live views of one session as Server-Sent Events: what the store holds of it now, then each part
// as it is written (the recorder's writes are announced by src/store/write-feed.ts; a session
// recorded by another gateway sharing the store is looked at every two seconds), until it ends.
// What a viewer sees is what was durably recorded, in order.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { EventRow, SessionRow, Store } from '../store/types.ts';
import type { WriteFeed } from '../store/write-feed.ts';

export interface TailOptions {
  store: Store;
  written?: WriteFeed;
  session: SessionRow;
  /** The open streams, ended when the API closes. */
  open: Set<ServerResponse>;
  /** The SSE frames for what the session holds before anything live (all of its events). */
  backlog(events: EventRow[]): string;
  /** The frames for events written since. */
  more(events: EventRow[]): string;
  /** The last frame, once the session has ended. */
  ended(session: SessionRow): string;
  /**
   * Whether the viewer may still see the session (its token not revoked or expired, its audit
   * grant not taken away): asked every few seconds; when it says why not, the stream ends with a
   * `revoked` frame.
   */
  stillAllowed?: () => Promise<string | null>;
  pollMs?: number;
}

const RECHECK_MS = 5000;
const MIN_PULL_MS = 50;

const KEEPALIVE_MS = 15_000;

export function sse(event: string | null, data: unknown): string {
  // JSON never holds a raw newline, so one data line carries it.
  return `${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`;
}

export async function tailSession(req: FastifyRequest, reply: FastifyReply, o: TailOptions): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  // connection: close — a stream's connection is never reused, and once ended (the API closing)
  // it must not linger as an idle keep-alive the server waits for.
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-accel-buffering': 'no', connection: 'close' });
  o.open.add(res);
  const id = o.session.id;
  let last = -1;
  let done = false;
  let busy = false;
  let again = false;
  let quietSince = Date.now();
  let checkedAt = Date.now();
  const write = (frame: string) => {
    if (frame && !res.destroyed) {
      res.write(frame);
      quietSince = Date.now();
    }
  };
  const finish = (session: SessionRow) => {
    if (done) return;
    done = true;
    write(o.ended(session));
    res.end();
  };
  const pull = async (first: boolean) => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const rows = await o.store.listEvents(id, first ? undefined : last);
        if (res.destroyed || done) return;
        if (rows.length > 0) last = rows.at(-1)!.seq;
        if (first) write(o.backlog(rows));
        else if (rows.length > 0) write(o.more(rows));
        first = false;
        if (rows.some((e) => e.type === 'session.end')) {
          const s = await o.store.getSession(id);
          finish(s ?? o.session);
        }
      } while (again && !done && !res.destroyed);
    } catch (err) {
      req.log.warn({ err: (err as Error).message, session: id }, 'live session stream');
    } finally {
      busy = false;
    }
  };
  // A busy session is written many times a second: each stream reads the store at most every
  // MIN_PULL_MS for it (what was written meanwhile comes in the next read).
  let lastPull = 0;
  let scheduled: NodeJS.Timeout | null = null;
  const woken = () => {
    if (scheduled || done) return;
    const wait = lastPull + MIN_PULL_MS - Date.now();
    if (wait <= 0) { lastPull = Date.now(); void pull(false); return; }
    scheduled = setTimeout(() => { scheduled = null; lastPull = Date.now(); void pull(false); }, wait);
  };
  let unwatch = () => {};
  let timer: NodeJS.Timeout | undefined;
  res.on('close', () => { done = true; clearInterval(timer); if (scheduled) clearTimeout(scheduled); unwatch(); o.open.delete(res); });
  // What the store holds first, then what is written: the wake-ups start after the first read
  // (and one read at once catches what was written in between).
  await pull(true);
  if (!done && o.session.endedAt !== null) { finish(o.session); return; }
  if (done || res.destroyed) return;
  unwatch = o.written?.watch(id, woken) ?? (() => {});
  woken();
  timer = setInterval(() => {
    void (async () => {
      if (o.stillAllowed && Date.now() - checkedAt >= RECHECK_MS) {
        checkedAt = Date.now();
        const refused = await o.stillAllowed().catch(() => 'access could not be checked');
        if (refused !== null) {
          if (!done) { done = true; write(sse('revoked', { error: refused })); res.end(); }
          return;
        }
      }
      await pull(false);
      if (done || res.destroyed) return;
      // Ended without a session.end event (taken over, sealed at a restart): the row says so.
      const s = await o.store.getSession(id).catch(() => undefined);
      if (s && s.endedAt !== null) { await pull(false); finish(s); return; }
      if (Date.now() - quietSince >= KEEPALIVE_MS) write(': keep-alive\n\n');
    })();
  }, o.pollMs ?? 2000);
}
